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
// parameters. NetConfig's `cpb` and `se` switch off its two additions for the
// paper's ablations ("COVID-Rate without CPB", "Residual U-Net with CPB").
#pragma once
#include <optional>
#include <vector>

#include "model/blocks.h"
#include "model/segmentation_net.h"

namespace covidrate {

class CovidRateNet : public SegmentationNet {
 public:
  // Builds the network and allocates its parameters on the CPU (move them
  // with parameters().to(device)). config.architecture must be CovidRate.
  explicit CovidRateNet(const NetConfig& config = {});

  // Channel counts at this width.
  int stem_channels() const { return stem_channels_; }
  const std::vector<int>& encoder_channels() const { return encoder_channels_; }
  const std::vector<int>& decoder_channels() const { return decoder_channels_; }

 private:
  ag::Var features(const ag::Var& image) const override;
  void set_blocks_training(bool training) override;
  void prepare_blocks(DType compute, bool upsample_phases) override;

  int stem_channels_;
  std::vector<int> encoder_channels_, decoder_channels_;
  std::optional<model::ConvBnRelu> stem_;
  std::vector<model::EncoderBlock> encoders_;
  std::optional<model::ContextPerceptionBoosting> cpb_;
  std::vector<model::DecoderBlock> decoders_;
};

}  // namespace covidrate
