#include "model/unet.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace covidrate {

namespace model {

namespace {
Conv2d::Options without_bias() {
  Conv2d::Options o;
  o.bias = false;
  return o;
}
}  // namespace

AttentionGate::AttentionGate(const BlockSite& site, int skip_channels, int up_channels)
    : Module(site.name + ".gate"),
      // One bias for Wx x + Wg g is enough: it sits on Wg.
      skip_(make_conv(site, "gate.skip", skip_channels, std::max(1, skip_channels / 2), 1, without_bias())),
      up_(make_conv(site, "gate.up", up_channels, std::max(1, skip_channels / 2), 1)),
      psi_(make_conv(site, "gate.psi", std::max(1, skip_channels / 2), 1, 1)) {}

ag::Var AttentionGate::coefficients(const ag::Var& skip, const ag::Var& up) const {
  if (inference_) {
    const ag::Var q = ag::relu(ag::add(inference_->skip.forward(skip), inference_->up.forward(up)));
    return ag::sigmoid(inference_->psi.forward(q));
  }
  const ag::Var q = ag::relu(ag::add(skip_.forward(skip), up_.forward(up)));
  return ag::sigmoid(psi_.forward(q));
}

ag::Var AttentionGate::forward(const ag::Var& skip, const ag::Var& up) const {
  return ag::mul_pixel(skip, coefficients(skip, up));
}

void AttentionGate::set_training(bool training) {
  Module::set_training(training);
  if (training) inference_.reset();
}

void AttentionGate::prepare_inference(DType compute) {
  inference_ = Inference{fold_for_inference({&skip_}, nullptr, compute).front(),
                         fold_for_inference({&up_}, nullptr, compute).front(),
                         fold_for_inference({&psi_}, nullptr, compute).front()};
}

}  // namespace model

namespace {
// Channel counts of Ronneberger et al. (width 1): enc1..enc4, then the bridge.
constexpr int kLevelChannels[] = {64, 128, 256, 512, 1024};
}  // namespace

UNet::UNet(const NetConfig& config) : SegmentationNet("UNet", config) {
  CR_CHECK(config.architecture == Architecture::UNet || config.architecture == Architecture::AttentionUNet,
           "UNet: the configuration names " << to_string(config.architecture) << " (use make_network)");
  CR_CHECK(config.cpb && config.se, "UNet: CPB and SE are COVID-Rate's; " << to_string(config.architecture)
                                                                           << " has neither to switch off");
  using model::BlockSite;
  using model::ConvBnRelu;
  const auto level = [&](const BlockSite& site, int in, int out) {
    return Level{ConvBnRelu(site, "conv1", "bn1", in, out, 3), ConvBnRelu(site, "conv2", "bn2", out, out, 3)};
  };

  int channels = 1;
  std::vector<std::string> level_stages;  // enc1..enc4, bridge
  for (int i = 0; i < 5; ++i) {
    const int out = scaled_channels(kLevelChannels[i], config.width);
    const std::string name = i < 4 ? "enc" + std::to_string(i + 1) : "bridge";
    encoder_channels_.push_back(out);
    encoders_.push_back(level(BlockSite{store(), costs(), name, 1 << i}, channels, out));
    add_stage(name, out, 1 << i, {i == 0 ? std::string(kImageInput) : level_stages.back()},
              i == 0 ? "2 x (3x3 conv, BN, ReLU)" : "max pool, 2 x (3x3, BN, ReLU)");
    level_stages.push_back(name);
    channels = out;
  }

  const bool attention = config.architecture == Architecture::AttentionUNet;
  for (int i = 0; i < 4; ++i) {
    const int skip = encoder_channels_[3 - i];
    const std::string name = "dec" + std::to_string(i + 1);
    const BlockSite site{store(), costs(), name, 8 >> i};
    ups_.emplace_back(site, "up_conv", "up_bn", channels, skip, 3);
    if (attention) gates_.emplace_back(site, skip, skip);
    decoders_.push_back(level(site, 2 * skip, skip));
    add_stage(name, skip, 8 >> i, {i == 0 ? "bridge" : "dec" + std::to_string(i), level_stages[3 - i]},
              attention ? "up-conv, gated concat, 2 x 3x3" : "up-conv, concat, 2 x 3x3");
    channels = skip;
  }

  add_head(channels);
  store().allocate(Device::CPU);
}

void UNet::set_blocks_training(bool training) {
  for (Level& l : encoders_) l.first.set_training(training), l.second.set_training(training);
  for (auto& u : ups_) u.set_training(training);
  for (auto& g : gates_) g.set_training(training);
  for (Level& l : decoders_) l.first.set_training(training), l.second.set_training(training);
}

void UNet::prepare_blocks(DType compute, bool upsample_phases) {
  for (Level& l : encoders_) l.first.prepare_inference(compute), l.second.prepare_inference(compute);
  for (auto& u : ups_) upsample_phases ? u.prepare_upsampled_inference(compute) : u.prepare_inference(compute);
  for (auto& g : gates_) g.prepare_inference(compute);
  for (Level& l : decoders_) l.first.prepare_inference(compute), l.second.prepare_inference(compute);
}

ag::Var UNet::features(const ag::Var& image) const {
  std::vector<ag::Var> skips;
  ag::Var x = image;
  for (size_t i = 0; i < encoders_.size(); ++i) {
    if (i > 0) x = ag::maxpool2x2(x);
    x = encoders_[i].forward(x);
    skips.push_back(x);
  }
  // Each map is let go as soon as nothing reads it (the tape, when there is
  // one, keeps what the backward needs): without a tape the skip and the
  // upsampled map go once concatenated, the concatenation once the decoder's
  // first convolution has run.
  for (size_t i = 0; i < decoders_.size(); ++i) {
    ag::Var up = ups_[i].forward_upsampled(std::exchange(x, ag::Var()));
    ag::Var skip = std::move(skips[3 - i]);
    if (!gates_.empty()) skip = gates_[i].forward(skip, up);
    ag::Var joined = ag::concat({std::move(skip), std::move(up)});
    x = decoders_[i].forward(std::move(joined));
  }
  return x;
}

}  // namespace covidrate
