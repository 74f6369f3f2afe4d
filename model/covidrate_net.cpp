#include "model/covidrate_net.h"

#include <string>
#include <utility>
#include <vector>

namespace covidrate {

namespace {

// Channel counts of the paper's network (width 1).
constexpr int kStemChannels = 32;
constexpr int kEncoderChannels[] = {32, 64, 128, 256};
constexpr int kCpbChannels = 256;
constexpr int kDecoderChannels[] = {512, 256, 128, 64};

}  // namespace

CovidRateNet::CovidRateNet(const NetConfig& config)
    : SegmentationNet("CovidRateNet", config), stem_channels_(scaled_channels(kStemChannels, config.width)) {
  CR_CHECK(config.architecture == Architecture::CovidRate,
           "CovidRateNet: the configuration names " << to_string(config.architecture) << " (use make_network)");
  using model::BlockSite;
  stem_.emplace(BlockSite{store(), costs(), "stem", 1}, "conv", "bn", 1, stem_channels_, 7);
  add_stage("stem", stem_channels_, 1, {kImageInput}, "7x7 conv, BN, ReLU");

  // Encoder; skip_channels[i] is the input of encoding block i, the skip of
  // the decoding block at the same resolution (skip_stages[i] its stage).
  std::vector<int> skip_channels;
  std::vector<std::string> skip_stages;
  int channels = stem_channels_;
  std::string previous = "stem";
  encoders_.reserve(4);
  for (int i = 0; i < 4; ++i) {
    const int out = scaled_channels(kEncoderChannels[i], config.width);
    const std::string name = "enc" + std::to_string(i + 1);
    encoder_channels_.push_back(out);
    skip_channels.push_back(channels);
    skip_stages.push_back(previous);
    encoders_.emplace_back(BlockSite{store(), costs(), name, 2 << i}, channels, out, config.se);
    add_stage(name, out, 2 << i, {previous},
              config.se ? "2 residual units (stride 2), SE" : "2 residual units (stride 2)");
    channels = out;
    previous = name;
  }

  if (config.cpb) {
    const int out = scaled_channels(kCpbChannels, config.width);
    cpb_.emplace(BlockSite{store(), costs(), "cpb", 16}, channels, out);
    add_stage("cpb", out, 16, {previous}, "1x1 + 3x3 dil. 1, 2, 4, 8, sum");
    channels = out;
    previous = "cpb";
  }

  decoders_.reserve(4);
  for (int i = 0; i < 4; ++i) {
    const int out = scaled_channels(kDecoderChannels[i], config.width);
    const std::string name = "dec" + std::to_string(i + 1);
    decoder_channels_.push_back(out);
    decoders_.emplace_back(BlockSite{store(), costs(), name, 8 >> i}, channels, skip_channels[3 - i], out,
                           config.se);
    add_stage(name, out, 8 >> i, {previous, skip_stages[3 - i]},
              config.se ? "up-conv, concat, 3x3 dil. 2, SE" : "up-conv, concat, 3x3 dil. 2");
    channels = out;
    previous = name;
  }

  add_head(channels);
  store().allocate(Device::CPU);
}

void CovidRateNet::set_blocks_training(bool training) {
  stem_->set_training(training);
  for (auto& e : encoders_) e.set_training(training);
  if (cpb_) cpb_->set_training(training);
  for (auto& d : decoders_) d.set_training(training);
}

void CovidRateNet::prepare_blocks(DType compute, bool upsample_phases) {
  stem_->prepare_inference(compute);
  for (auto& e : encoders_) e.prepare_inference(compute);
  if (cpb_) cpb_->prepare_inference(compute);
  for (auto& d : decoders_) d.prepare_inference(compute, upsample_phases);
}

ag::Var CovidRateNet::features(const ag::Var& image) const {
  ag::Var x = stem_->forward(image);
  std::vector<ag::Var> skips;
  for (const auto& encoder : encoders_) {
    skips.push_back(x);
    x = encoder.forward(x);
  }
  if (cpb_) x = cpb_->forward(x);
  // Moved in: each decoder drops its input and its skip once used (blocks.cpp).
  for (size_t i = 0; i < decoders_.size(); ++i)
    x = decoders_[i].forward(std::move(x), std::move(skips[skips.size() - 1 - i]));
  return x;
}

}  // namespace covidrate
