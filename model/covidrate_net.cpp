#include "model/covidrate_net.h"

#include <algorithm>
#include <cmath>

namespace covidrate {

namespace {

// Channel counts of the paper's network (width 1).
constexpr int kStemChannels = 32;
constexpr int kEncoderChannels[] = {32, 64, 128, 256};
constexpr int kCpbChannels = 256;
constexpr int kDecoderChannels[] = {512, 256, 128, 64};
// Four stride-2 encoding blocks: H and W must be multiples of 2^4.
constexpr int kSizeMultiple = 16;

// The stage of a module path: "enc2.unit1.conv1.weight" -> "enc2".
std::string stage_of(const std::string& path) { return path.substr(0, path.find('.')); }

void check_size(const char* what, int64_t height, int64_t width) {
  CR_CHECK(height > 0 && width > 0 && height % kSizeMultiple == 0 && width % kSizeMultiple == 0,
           what << ": image size " << height << " x " << width << " must be positive multiples of "
                << kSizeMultiple << " (four stride-2 encoding blocks)");
}

// 2 x the multiply-accumulates of one layer for an H x W image.
double layer_flops(const model::LayerCost& c, int64_t height, int64_t width) {
  const double pixels = static_cast<double>(height / c.downscale) * static_cast<double>(width / c.downscale);
  return 2.0 * (static_cast<double>(c.macs_per_pixel) * pixels + static_cast<double>(c.macs_per_image));
}

}  // namespace

int scaled_channels(int channels, double width) {
  // 16 bounds the widest layer at 8192 channels (a 3x3 conv of 2.4G parameters).
  CR_CHECK(width > 0 && width <= 16, "CovidRateNet: width multiplier " << width << " must be in (0, 16]");
  const long rounded = std::lround(channels * width / 8.0) * 8;
  return static_cast<int>(std::max(8L, rounded));
}

CovidRateNet::CovidRateNet(const CovidRateConfig& config)
    : Module("covidrate"),
      config_(config),
      store_(std::make_unique<ParameterStore>(config.dtype, config.seed)),
      stem_channels_(scaled_channels(kStemChannels, config.width)) {
  using model::BlockSite;
  stem_.emplace(BlockSite{*store_, costs_, "stem", 1}, "conv", "bn", 1, stem_channels_, 7);

  // Encoder; skip_channels[i] is the input of encoding block i, the skip of
  // the decoding block at the same resolution.
  std::vector<int> skip_channels;
  int channels = stem_channels_;
  encoders_.reserve(4);
  for (int i = 0; i < 4; ++i) {
    const int out = scaled_channels(kEncoderChannels[i], config.width);
    encoder_channels_.push_back(out);
    skip_channels.push_back(channels);
    encoders_.emplace_back(BlockSite{*store_, costs_, "enc" + std::to_string(i + 1), 2 << i}, channels, out);
    channels = out;
  }

  if (config.cpb) {
    const int out = scaled_channels(kCpbChannels, config.width);
    cpb_.emplace(BlockSite{*store_, costs_, "cpb", 16}, channels, out);
    channels = out;
  }

  decoders_.reserve(4);
  for (int i = 0; i < 4; ++i) {
    const int out = scaled_channels(kDecoderChannels[i], config.width);
    decoder_channels_.push_back(out);
    decoders_.emplace_back(BlockSite{*store_, costs_, "dec" + std::to_string(i + 1), 8 >> i}, channels,
                           skip_channels[3 - i], out);
    channels = out;
  }

  head_.emplace(model::make_conv(BlockSite{*store_, costs_, "head", 1}, "conv", channels, 1, 1));
  store_->allocate(Device::CPU);
}

void CovidRateNet::set_training(bool training) {
  Module::set_training(training);
  stem_->set_training(training);
  for (auto& e : encoders_) e.set_training(training);
  if (cpb_) cpb_->set_training(training);
  for (auto& d : decoders_) d.set_training(training);
  if (training) inference_.reset();
}

void CovidRateNet::prepare_inference(DType compute) {
  CR_CHECK(!training(), "CovidRateNet::prepare_inference: call set_training(false) first (the inference form "
                        "folds BN's running statistics)");
  const DType params = store_->dtype();
  CR_CHECK(compute == params || (params == DType::F32 && compute == DType::BF16),
           "CovidRateNet::prepare_inference: cannot compute in " << to_string(compute) << " with "
               << to_string(params) << " parameters (f32 parameters compute in f32 or bf16)");
  try {
    stem_->prepare_inference(compute);
    for (auto& e : encoders_) e.prepare_inference(compute);
    if (cpb_) cpb_->prepare_inference(compute);
    for (auto& d : decoders_) d.prepare_inference(compute);
    inference_ = InferenceForm{compute, store_->values_version(),
                               model::fold_for_inference({&*head_}, nullptr, compute).front()};
  } catch (...) {
    // No block may keep a form built before the failure (possibly from older
    // weights): passing through training mode drops them all.
    set_training(true);
    set_training(false);
    throw;
  }
}

DType CovidRateNet::compute_dtype() const { return inference_ ? inference_->compute : store_->dtype(); }

ag::Var CovidRateNet::forward(const ag::Var& image) const {
  const Shape& s = image.value().shape();
  CR_CHECK(s.rank() == 4 && s[1] == 1,
           "CovidRateNet::forward: expected an image [N, 1, H, W] (one CT channel), got " << s.str());
  check_size("CovidRateNet::forward", s[2], s[3]);
  CR_CHECK(image.value().dtype() == store_->dtype() && image.value().device() == store_->device(),
           "CovidRateNet::forward: image is " << image.value().str() << ", the parameters are "
                                              << to_string(store_->dtype()) << " on "
                                              << to_string(store_->device()));

  CR_CHECK(!inference_ || inference_->values_version == store_->values_version(),
           "CovidRateNet::forward: the parameters were loaded or moved after prepare_inference; call it again");

  // Evaluation: no tape (BN with running statistics has no backward).
  std::optional<ag::NoGrad> no_grad;
  if (!training()) no_grad.emplace();

  ag::Var x = stem_->forward(inference_ ? ag::Var(model::cast_to(image.value(), inference_->compute)) : image);
  std::vector<ag::Var> skips;
  for (const auto& encoder : encoders_) {
    skips.push_back(x);
    x = encoder.forward(x);
  }
  if (cpb_) x = cpb_->forward(x);
  for (size_t i = 0; i < decoders_.size(); ++i) x = decoders_[i].forward(x, skips[skips.size() - 1 - i]);
  if (!inference_) return ag::sigmoid(head_->forward(x));
  // The sigmoid of the widened logits: no bf16 rounding of the probabilities.
  return ag::sigmoid(ag::Var(model::cast_to(inference_->head.forward(x).value(), image.value().dtype())));
}

int64_t CovidRateNet::param_count() const {
  int64_t count = 0;
  for (const auto& p : store_->parameters())
    if (p.trainable) count += p.var.value().numel();
  return count;
}

double CovidRateNet::forward_flops(int64_t height, int64_t width) const {
  check_size("CovidRateNet::forward_flops", height, width);
  double flops = 0;
  for (const auto& c : costs_) flops += layer_flops(c, height, width);
  return flops;
}

std::vector<StageSummary> CovidRateNet::summary(int64_t height, int64_t width) const {
  check_size("CovidRateNet::summary", height, width);
  std::vector<StageSummary> rows;
  auto add_row = [&](const std::string& name, int64_t channels, int downscale) {
    rows.push_back({name, Shape{channels, height / downscale, width / downscale}, 0, 0.0});
  };
  add_row("stem", stem_channels_, 1);
  for (int i = 0; i < 4; ++i) add_row("enc" + std::to_string(i + 1), encoder_channels_[i], 2 << i);
  if (cpb_) add_row("cpb", scaled_channels(kCpbChannels, config_.width), 16);
  for (int i = 0; i < 4; ++i) add_row("dec" + std::to_string(i + 1), decoder_channels_[i], 8 >> i);
  add_row("head", 1, 1);

  auto row_of = [&](const std::string& path) -> StageSummary& {
    for (auto& r : rows)
      if (r.name == stage_of(path)) return r;
    CR_FAIL("CovidRateNet::summary: '" << path << "' belongs to no stage");
  };
  for (const auto& p : store_->parameters())
    if (p.trainable) row_of(p.name).parameters += p.var.value().numel();
  for (const auto& c : costs_) row_of(c.name).flops += layer_flops(c, height, width);
  return rows;
}

}  // namespace covidrate
