// COVID-Rate (Enshaei et al., Sci. Rep. 2022): an encoder-decoder that maps one
// CT slice [N, 1, H, W] to a lesion probability per pixel [N, 1, H, W].
//
//   stem   7x7 conv, BN, ReLU                                   32 ch, 1/1
//   enc1-4 each: unit 1 (stride 2, projection shortcut)
//                + unit 2 (identity shortcut)      32, 64, 128, 256 ch, 1/2 .. 1/16
//   cpb    1x1 + 3x3 dilation 1/2/4/8, summed, BN, ReLU        256 ch, 1/16
//   dec1-4 upsample, conv, skip transition, concat, conv, SE
//                                                  512, 256, 128, 64 ch, 1/8 .. 1/1
//   head   1x1 conv to one channel, sigmoid
//
// The decoder's skips are the inputs of the encoding blocks: dec1 takes the
// input of enc4, ..., dec4 the stem's output. docs/model.md has the full table
// (shapes, parameters, FLOPs). At width 1 the network has 14,380,833 trainable
// parameters.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/blocks.h"

namespace covidrate {

struct CovidRateConfig {
  // Scales every channel count: round(C * width / 8) * 8, at least 8 (see
  // scaled_channels), in (0, 16]. 1.0 is the paper's network; 0.25 trains on a CPU.
  double width = 1.0;
  // Context perception boosting. Without it the decoder takes the last
  // encoding block's output directly.
  bool cpb = true;
  // Seeds the initial weights (nn/layers.h: Keras initializers).
  uint64_t seed = 0;
  // F32 to train and deploy; F64 for gradient checks on the CPU.
  DType dtype = DType::F32;
};

// The channel count of a layer that has `channels` at width 1: a multiple of
// 8 (aligned rows for vectorized and tensor-core kernels), never below 8.
int scaled_channels(int channels, double width);

// One row of the model summary: a top-level stage (stem, enc1..4, cpb,
// dec1..4, head) for an input of H x W.
struct StageSummary {
  std::string name;
  Shape output;        // [C, H, W] of one image
  int64_t parameters;  // trainable elements
  double flops;        // forward, per image (see CovidRateNet::forward_flops)
};

class CovidRateNet : public Module {
 public:
  // Builds the network and allocates its parameters on the CPU (move them
  // with parameters().to(device)).
  explicit CovidRateNet(const CovidRateConfig& config = {});

  // image [N, 1, H, W] with H, W multiples of 16 -> probabilities [N, 1, H, W].
  // In training mode BN uses batch statistics and the ops record onto the
  // current tape; in evaluation mode BN uses its running averages and the
  // forward runs without a tape (BN's evaluation mode has no backward).
  // The image has the parameters' dtype, and so do the probabilities.
  ag::Var forward(const ag::Var& image) const;
  // set_training(true) also drops the inference form.
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
  // BN's kernel on CUDA, exactly as before.
  void prepare_inference(DType compute);
  bool has_inference_form() const { return inference_.has_value(); }
  // The dtype the layers compute in: the inference form's, else the parameters'.
  DType compute_dtype() const;

  const CovidRateConfig& config() const { return config_; }
  ParameterStore& parameters() { return *store_; }
  const ParameterStore& parameters() const { return *store_; }
  // Trainable elements (BN's gamma and beta count; running statistics do not).
  int64_t param_count() const;

  // Forward FLOPs of one H x W image: 2 x the multiply-accumulates of every
  // convolution and SE fully connected layer. Bias adds, BN, activations,
  // pooling, upsampling, concatenation and the SE scaling are not counted:
  // they are memory-bound, and together below 1% of the arithmetic.
  double forward_flops(int64_t height, int64_t width) const;
  std::vector<StageSummary> summary(int64_t height, int64_t width) const;

  // Channel counts at this width.
  int stem_channels() const { return stem_channels_; }
  const std::vector<int>& encoder_channels() const { return encoder_channels_; }
  const std::vector<int>& decoder_channels() const { return decoder_channels_; }

 private:
  CovidRateConfig config_;
  std::unique_ptr<ParameterStore> store_;
  model::CostLedger costs_;
  int stem_channels_;
  std::vector<int> encoder_channels_, decoder_channels_;
  std::optional<model::ConvBnRelu> stem_;
  std::vector<model::EncoderBlock> encoders_;
  std::optional<model::ContextPerceptionBoosting> cpb_;
  std::vector<model::DecoderBlock> decoders_;
  std::optional<Conv2d> head_;
  struct InferenceForm {
    DType compute;
    uint64_t values_version;  // the store's when it was built
    model::InferenceConv head;
  };
  std::optional<InferenceForm> inference_;  // the blocks hold theirs
};

}  // namespace covidrate
