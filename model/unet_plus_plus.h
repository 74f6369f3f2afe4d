// U-Net++ (Zhou et al., DLMIA 2018), the remaining baseline of the COVID-Rate
// paper's Table 4: a U-Net whose skips are nested, dense paths of
// convolution nodes.
//
//   X(i,0)  the encoder: two 3x3 conv, BN, ReLU at depth i (1/2^i), after a
//           2x2 max pool for i > 0                        32, 64, 128, 256, 512 ch
//   X(i,j)  j >= 1: two 3x3 conv, BN, ReLU over the concatenation
//           [X(i,0), ..., X(i,j-1), up(X(i+1,j-1))], up = 2x nearest upsampling;
//           as many channels as X(i,0)
//   head    1x1 conv on X(0,4) to one channel, sigmoid
//
// Channel counts (Zhou et al.'s 32..512) are at width 1 and scale like
// COVID-Rate's (scaled_channels). As in model/unet.h every conv pads "same"
// and has BN. Deep supervision (a head on every X(0,j)) is left out: the paper's
// comparison trains one output.
#pragma once
#include <optional>
#include <vector>

#include "model/blocks.h"
#include "model/segmentation_net.h"

namespace covidrate {

class UNetPlusPlus : public SegmentationNet {
 public:
  static constexpr int kDepth = 4;  // X(0..4, .)

  // config.architecture must be UNetPlusPlus; `cpb` and `se` keep their defaults.
  explicit UNetPlusPlus(const NetConfig& config);

  // Channels of depth i (0..4) at this width.
  const std::vector<int>& level_channels() const { return channels_; }

 private:
  ag::Var features(const ag::Var& image) const override;
  void set_blocks_training(bool training) override;
  void prepare_blocks(DType compute, bool upsample_phases) override;

  struct Node {  // two conv, BN, ReLU
    model::ConvBnRelu first, second;
  };
  // Node X(i,j) at index j * (kDepth + 1) + i; entries with i + j > kDepth are empty.
  static int index(int i, int j) { return j * (kDepth + 1) + i; }
  std::vector<int> channels_;
  std::vector<std::optional<Node>> nodes_;
};

}  // namespace covidrate
