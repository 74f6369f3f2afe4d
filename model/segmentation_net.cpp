#include "model/segmentation_net.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "model/covidrate_net.h"
#include "model/unet.h"
#include "model/unet_plus_plus.h"

namespace covidrate {

namespace {

struct ArchitectureName {
  Architecture architecture;
  const char* name;
  const char* title;
};
constexpr ArchitectureName kArchitectures[] = {
    {Architecture::CovidRate, "covid-rate", "COVID-Rate"},
    {Architecture::UNet, "unet", "U-Net"},
    {Architecture::AttentionUNet, "attention-unet", "Attention U-Net"},
    {Architecture::UNetPlusPlus, "unet++", "U-Net++"},
};

const ArchitectureName& entry(Architecture architecture) {
  for (const auto& a : kArchitectures)
    if (a.architecture == architecture) return a;
  CR_FAIL("unknown architecture " << static_cast<int>(architecture));
}

// The stage of a module path: "enc2.unit1.conv1.weight" -> "enc2".
std::string stage_of(const std::string& path) { return path.substr(0, path.find('.')); }

void check_size(const char* what, int64_t height, int64_t width) {
  constexpr int m = SegmentationNet::kSizeMultiple;
  CR_CHECK(height > 0 && width > 0 && height % m == 0 && width % m == 0,
           what << ": image size " << height << " x " << width << " must be positive multiples of " << m
                << " (the map is halved four times)");
}

// 2 x the multiply-accumulates of one layer for an H x W image.
double layer_flops(const model::LayerCost& c, int64_t height, int64_t width) {
  const double pixels = static_cast<double>(height / c.downscale) * static_cast<double>(width / c.downscale);
  return 2.0 * (static_cast<double>(c.macs_per_pixel) * pixels + static_cast<double>(c.macs_per_image));
}

}  // namespace

const char* to_string(Architecture architecture) { return entry(architecture).name; }

Architecture parse_architecture(const std::string& name) {
  std::string valid;
  for (const auto& a : kArchitectures) {
    if (name == a.name) return a.architecture;
    valid += valid.empty() ? a.name : std::string(", ") + a.name;
  }
  CR_FAIL("unknown architecture '" << name << "' (expected one of " << valid << ")");
}

std::string describe(const NetConfig& config) {
  std::ostringstream os;
  os << entry(config.architecture).title << ", width " << config.width;
  if (config.architecture == Architecture::CovidRate) {
    if (!config.cpb) os << ", without CPB";
    if (!config.se) os << ", without SE";
  }
  return os.str();
}

std::map<std::string, std::string> architecture_metadata(const NetConfig& config) {
  std::ostringstream width;
  width.precision(17);
  width << config.width;
  return {{"architecture", to_string(config.architecture)},
          {"width", width.str()},
          {"cpb", config.cpb ? "1" : "0"},
          {"se", config.se ? "1" : "0"}};
}

int scaled_channels(int channels, double width) {
  // 16 bounds the widest layer at 8192 channels (a 3x3 conv of 2.4G parameters).
  CR_CHECK(width > 0 && width <= 16, "network: width multiplier " << width << " must be in (0, 16]");
  const long rounded = std::lround(channels * width / 8.0) * 8;
  return static_cast<int>(std::max(8L, rounded));
}

SegmentationNet::SegmentationNet(const std::string& name, const NetConfig& config)
    : Module(name), config_(config), store_(std::make_unique<ParameterStore>(config.dtype, config.seed)) {
  store_->set_draw_initial_values(config.draw_initial_weights);
}

void SegmentationNet::add_stage(const std::string& stage, int64_t channels, int downscale,
                                std::vector<std::string> inputs, std::string operation) {
  CR_CHECK(!inputs.empty(), name() << "::add_stage: " << stage << " reads nothing");
  for (const std::string& input : inputs) {
    const bool earlier = std::any_of(stages_.begin(), stages_.end(), [&](const Stage& s) { return s.name == input; });
    CR_CHECK(input == kImageInput || earlier, name() << "::add_stage: " << stage << " reads '" << input
                                                     << "', which is neither the image nor an earlier stage");
  }
  stages_.push_back({stage, channels, downscale, std::move(inputs), std::move(operation)});
}

void SegmentationNet::add_head(int channels) {
  CR_CHECK(!stages_.empty(), name() << "::add_head: no stage before the head");
  head_.emplace(model::make_conv(model::BlockSite{*store_, costs_, "head", 1}, "conv", channels, 1, 1));
  add_stage("head", 1, 1, {stages_.back().name}, "1x1 conv, sigmoid");
}

void SegmentationNet::set_training(bool training) {
  Module::set_training(training);
  set_blocks_training(training);
  if (training) {
    inference_.reset();
    store_->ensure_training_state();  // a network that trains takes gradients
  }
}

void SegmentationNet::prepare_inference(DType compute, UpsampleConv upsample) {
  CR_CHECK(!training(), name() << "::prepare_inference: call set_training(false) first (the inference form "
                                  "folds BN's running statistics)");
  const DType params = store_->dtype();
  CR_CHECK(compute == params || (params == DType::F32 && compute == DType::BF16),
           name() << "::prepare_inference: cannot compute in " << to_string(compute) << " with "
                  << to_string(params) << " parameters (f32 parameters compute in f32 or bf16)");
  try {
    prepare_blocks(compute, upsample == UpsampleConv::Phases);
    inference_ = InferenceForm{compute, store_->values_version(),
                               model::fold_for_inference({&*head_}, nullptr, compute).front()};
  } catch (...) {
    // No block may keep a form built before the failure (possibly from older
    // weights): passing the blocks through training mode drops them all.
    set_blocks_training(true);
    set_blocks_training(false);
    inference_.reset();
    throw;
  }
}

DType SegmentationNet::compute_dtype() const { return inference_ ? inference_->compute : store_->dtype(); }

ag::Var SegmentationNet::forward(const ag::Var& image) const {
  const Shape& s = image.value().shape();
  CR_CHECK(s.rank() == 4 && s[1] == 1,
           name() << "::forward: expected an image [N, 1, H, W] (one CT channel), got " << s.str());
  const std::string what = name() + "::forward";
  check_size(what.c_str(), s[2], s[3]);
  CR_CHECK(image.value().dtype() == store_->dtype() && image.value().device() == store_->device(),
           what << ": image is " << image.value().str() << ", the parameters are " << to_string(store_->dtype())
                << " on " << to_string(store_->device()));
  CR_CHECK(!inference_ || inference_->values_version == store_->values_version(),
           what << ": the parameters were loaded or moved after prepare_inference; call it again");

  // Evaluation: no tape (BN with running statistics has no backward).
  std::optional<ag::NoGrad> no_grad;
  if (!training()) no_grad.emplace();

  CR_CHECK(head_, name() << "::forward: the network has no head (add_head)");
  if (!inference_) return ag::sigmoid(head_->forward(features(image)));
  const ag::Var out = inference_->head.forward(features(ag::Var(model::cast_to(image.value(), inference_->compute))));
  // The sigmoid of the widened logits: no bf16 rounding of the probabilities.
  return ag::sigmoid(ag::Var(model::cast_to(out.value(), image.value().dtype())));
}

int64_t SegmentationNet::param_count() const {
  int64_t count = 0;
  for (const auto& p : store_->parameters())
    if (p.trainable) count += p.var.value().numel();
  return count;
}

double SegmentationNet::forward_flops(int64_t height, int64_t width) const {
  check_size((name() + "::forward_flops").c_str(), height, width);
  double flops = 0;
  for (const auto& c : costs_) flops += layer_flops(c, height, width);
  return flops;
}

std::string StageSummary::output_text() const {
  return std::to_string(output[0]) + " x " + std::to_string(output[1]) + " x " + std::to_string(output[2]);
}

std::vector<StageSummary> SegmentationNet::summary(int64_t height, int64_t width) const {
  check_size((name() + "::summary").c_str(), height, width);
  std::vector<StageSummary> rows;
  for (const Stage& s : stages_)
    rows.push_back({s.name, Shape{s.channels, height / s.downscale, width / s.downscale}, 0, 0.0, s.inputs,
                    s.operation});
  auto row_of = [&](const std::string& path) -> StageSummary& {
    for (auto& r : rows)
      if (r.name == stage_of(path)) return r;
    CR_FAIL(name() << "::summary: '" << path << "' belongs to no stage");
  };
  for (const auto& p : store_->parameters())
    if (p.trainable) row_of(p.name).parameters += p.var.value().numel();
  for (const auto& c : costs_) row_of(c.name).flops += layer_flops(c, height, width);
  return rows;
}

std::unique_ptr<SegmentationNet> make_network(const NetConfig& config) {
  switch (config.architecture) {
    case Architecture::CovidRate: return std::make_unique<CovidRateNet>(config);
    case Architecture::UNet:
    case Architecture::AttentionUNet: return std::make_unique<UNet>(config);
    case Architecture::UNetPlusPlus: return std::make_unique<UNetPlusPlus>(config);
  }
  CR_FAIL("make_network: unknown architecture " << static_cast<int>(config.architecture));
}

}  // namespace covidrate
