// What every lesion-segmentation network of covidrate offers: COVID-Rate
// (model/covidrate_net.h) and the baselines the paper compares it with
// (Table 4; model/unet.h). Training, evaluation, `segment` and `pseudo-label`
// take a SegmentationNet, so each architecture runs through the same code.
//
// The base class owns what they share: the parameter store, the ledger of
// layer costs (FLOPs), the model summary, the inference form's bookkeeping, and
// forward's checks and casts, and the 1x1 head with its sigmoid that every
// network ends with. An architecture supplies its layers up to the head
// (features) and how they build their inference form.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/blocks.h"

namespace covidrate {

// The network families. Names as on the command line and in weights' metadata.
enum class Architecture {
  CovidRate,      // "covid-rate": the paper's network
  UNet,           // "unet": the paper's "Standard U-Net" baseline
  AttentionUNet,  // "attention-unet": U-Net with attention gates on its skips
  UNetPlusPlus,   // "unet++": U-Net with nested, dense skip paths
};
const char* to_string(Architecture architecture);
// Throws covidrate::Error naming the valid names.
Architecture parse_architecture(const std::string& name);

struct NetConfig {
  // Scales every channel count: round(C * width / 8) * 8, at least 8 (see
  // scaled_channels), in (0, 16]. 1.0 is the published network; 0.25 trains on a CPU.
  double width = 1.0;
  // COVID-Rate only: context perception boosting. Without it the decoder takes
  // the last encoding block's output directly.
  bool cpb = true;
  // Seeds the initial weights (nn/layers.h: Keras initializers).
  uint64_t seed = 0;
  // False when every weight is loaded from a file right after
  // (load_for_inference): zeros instead of random draws, 0.3 s less at full width.
  bool draw_initial_weights = true;
  // F32 to train and deploy; F64 for gradient checks on the CPU.
  DType dtype = DType::F32;
  Architecture architecture = Architecture::CovidRate;
  // COVID-Rate only: the residual squeeze-and-excitation of its encoding units
  // and decoding blocks. Without it (and with CPB) the network is the paper's
  // "Residual U-Net with CPB" baseline.
  bool se = true;
};
// "COVID-Rate, width 0.25, without CPB" and the like, for logs and reports.
std::string describe(const NetConfig& config);
// What `covidrate train` records in saved weights so that eval and segment
// rebuild the same network (model/load_weights.h reads it back):
// architecture, width, cpb, se.
std::map<std::string, std::string> architecture_metadata(const NetConfig& config);

// The channel count of a layer that has `channels` at width 1: a multiple of
// 8 (aligned rows for vectorized and tensor-core kernels), never below 8.
int scaled_channels(int channels, double width);

// What a stage's `inputs` call the network's input slice.
inline constexpr const char* kImageInput = "image";

// One row of the model summary: a top-level stage (stem, enc1..4, ...) for an
// input of H x W.
struct StageSummary {
  std::string name;
  Shape output;        // [C, H, W] of one image
  int64_t parameters;  // trainable elements
  double flops;        // forward, per image (see SegmentationNet::forward_flops)
  // The maps it reads: earlier stages' names, or kImageInput. The first is
  // its main path; any others are skip connections joined by concatenation.
  // (Declared by each architecture beside its features(); model/architecture_svg.h
  // draws the graph they make.)
  std::vector<std::string> inputs;
  std::string operation;  // what it does, in a few words ("7x7 conv, BN, ReLU")

  std::string output_text() const;  // "32 x 512 x 512"
};

class SegmentationNet : public Module {
 public:
  // Every architecture halves the map four times: H and W must be multiples of 16.
  static constexpr int kSizeMultiple = 16;

  // image [N, 1, H, W] with H, W multiples of 16 -> probabilities [N, 1, H, W].
  // In training mode BN uses batch statistics and the ops record onto the
  // current tape; in evaluation mode BN uses its running averages and the
  // forward runs without a tape (BN's evaluation mode has no backward).
  // The image has the parameters' dtype, and so do the probabilities.
  ag::Var forward(const ag::Var& image) const;
  // set_training(true) also drops the inference form and allocates the
  // parameters' training state (gradients, Adam's moments) if they have none.
  void set_training(bool training) override;

  // For deployment, in evaluation mode: builds ONCE the inference form
  // (model/inference_form.h), every BN folded into the convolutions before it
  // and every weight cast to `compute` (the parameters' dtype, or BF16 over F32
  // parameters), on the parameters' device. forward then runs it: the image
  // is cast to `compute` first, the last layer's output back to the image's
  // dtype before the sigmoid. It cannot go stale: set_training(true) drops it,
  // and forward refuses it once the parameters were loaded or moved since
  // (ParameterStore::values_version); call this again after either.
  // Without this call, evaluation folds BN at every call on the CPU and runs
  // BN's kernel on CUDA.
  //
  // `upsample` picks how the decoders' "upsample 2x, then 3x3 conv" runs:
  // Phases (what segment runs, on every device) computes it at the coarse
  // resolution as one 2x2 convolution with four times the output channels
  // (model::InferenceUpsampleConv: 2.25x fewer multiply-adds, no upsampled
  // map; on the CPU by Winograd F(4x4, 2x2)); Upsampled keeps the two steps,
  // for A/B benchmarks (bench_network infer-prepared[-upsampled], 2 threads:
  // 0.67 s against 0.73 s a slice). Both forms compute the same function; only
  // rounding differs.
  enum class UpsampleConv { Phases, Upsampled };
  void prepare_inference(DType compute, UpsampleConv upsample = UpsampleConv::Phases);
  bool has_inference_form() const { return inference_.has_value(); }
  // The dtype the layers compute in: the inference form's, else the parameters'.
  DType compute_dtype() const;

  const NetConfig& config() const { return config_; }
  ParameterStore& parameters() { return *store_; }
  const ParameterStore& parameters() const { return *store_; }
  // Trainable elements (BN's gamma and beta count; running statistics do not).
  int64_t param_count() const;

  // Forward FLOPs of one H x W image: 2 x the multiply-accumulates of every
  // convolution and SE fully connected layer. Bias adds, BN, activations,
  // pooling, upsampling, concatenation and the gates' multiplies are not
  // counted: they are memory-bound, and together below 1% of the arithmetic.
  double forward_flops(int64_t height, int64_t width) const;
  std::vector<StageSummary> summary(int64_t height, int64_t width) const;

 protected:
  // `name` is the module's (e.g. "CovidRateNet", "UNet"); the store is created on the CPU
  // in config.dtype, seeded by config.seed. The subclass builds its layers into
  // store() and costs(), calls add_stage for each top-level stage in order,
  // then store().allocate(Device::CPU).
  SegmentationNet(const std::string& name, const NetConfig& config);

  // The layers from the image (already in the compute dtype) to the feature
  // map the head reads, in the compute dtype. With the inference form, the
  // layers' inference forms.
  virtual ag::Var features(const ag::Var& image) const = 0;
  // Passes the training flag to every block (BN's mode, dropping their forms).
  virtual void set_blocks_training(bool training) = 0;
  // Builds every block's inference form in `compute`; upsample_phases: the
  // decoders' upsampling and 3x3 conv as one InferenceUpsampleConv.
  virtual void prepare_blocks(DType compute, bool upsample_phases) = 0;

  ParameterStore& store() { return *store_; }
  model::CostLedger& costs() { return costs_; }
  // A row of the summary: parameters and costs whose path starts with
  // "<name>." are counted in it. `inputs` name earlier stages (or
  // kImageInput), the main path first (see StageSummary).
  void add_stage(const std::string& stage, int64_t channels, int downscale, std::vector<std::string> inputs,
                 std::string operation);
  // Every network ends alike: a 1x1 conv from `channels` to one logit per pixel
  // ("head.conv", its own summary row), then the sigmoid. Called last, after
  // the layers (the seeded draw of the weights follows the order of creation).
  void add_head(int channels);

 private:
  NetConfig config_;
  std::unique_ptr<ParameterStore> store_;
  model::CostLedger costs_;
  struct Stage {
    std::string name;
    int64_t channels;
    int downscale;
    std::vector<std::string> inputs;
    std::string operation;
  };
  std::vector<Stage> stages_;
  std::optional<Conv2d> head_;
  struct InferenceForm {
    DType compute;
    uint64_t values_version;  // the store's when it was built
    model::InferenceConv head;
  };
  std::optional<InferenceForm> inference_;  // the blocks hold theirs
};

// The network `config` names, its parameters on the CPU.
std::unique_ptr<SegmentationNet> make_network(const NetConfig& config);

}  // namespace covidrate
