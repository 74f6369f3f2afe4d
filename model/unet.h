// The U-Net baselines of the COVID-Rate paper's Table 4 (Sci. Rep. 2022):
// "Standard U-Net" (Ronneberger et al., MICCAI 2015) and, with attention gates
// on its skip connections, "Attention U-Net" (Oktay et al., MIDL 2018).
//
//   enc1     two 3x3 conv, BN, ReLU                            64 ch, 1/1
//   enc2-4   2x2 max pool, then two 3x3 conv, BN, ReLU         128, 256, 512 ch, 1/2 .. 1/8
//   bridge   2x2 max pool, then two 3x3 conv, BN, ReLU         1024 ch, 1/16
//   dec1-4   2x nearest upsampling and a 3x3 conv, BN, ReLU to half the channels
//            (the "up-convolution"); the skip (enc4 .. enc1's output), through an
//            attention gate in the Attention U-Net; concatenated [skip, up]; two
//            3x3 conv, BN, ReLU                                512, 256, 128, 64 ch, 1/8 .. 1/1
//   head     1x1 conv to one channel, sigmoid
//
// Channel counts are at width 1 and scale like COVID-Rate's (scaled_channels).
// Departures from the papers, both for the engine's ops and a like-for-like
// comparison: the up-convolution is nearest upsampling then a 3x3 convolution
// (as COVID-Rate's decoder), not a 2x2 transposed convolution; every conv pads
// "same" and is followed by BN (the original U-Net cropped and had no BN).
//
// The attention gate (additive attention) weighs each pixel of the skip x by
// a in [0, 1], computed from x and from the decoder's upsampled features g at
// the same resolution:
//     q = ReLU(Wx x + Wg g + b),   a = sigmoid(psi q + c),   gated skip = x * a
// Wx, Wg, psi 1x1 convolutions, q with half the skip's channels, a [N, 1, H, W].
// Oktay et al. take g one level coarser and resample; gating at the skip's
// resolution with the up-convolution's output is the common simplification.
#pragma once
#include <optional>
#include <vector>

#include "model/blocks.h"
#include "model/segmentation_net.h"

namespace covidrate {

namespace model {

// The gate above. Parameters: "<site>.gate.skip" (Wx, no bias), "<site>.gate.up"
// (Wg with the bias b), "<site>.gate.psi" (one output channel, bias c).
class AttentionGate : public Module {
 public:
  AttentionGate(const BlockSite& site, int skip_channels, int up_channels);
  // skip [N, Cs, H, W], up [N, Cu, H, W] -> skip * a.
  ag::Var forward(const ag::Var& skip, const ag::Var& up) const;
  // The gate itself, a [N, 1, H, W] (for tests and pictures).
  ag::Var coefficients(const ag::Var& skip, const ag::Var& up) const;
  void set_training(bool training) override;
  void prepare_inference(DType compute);

 private:
  Conv2d skip_, up_, psi_;
  struct Inference {
    InferenceConv skip, up, psi;
  };
  std::optional<Inference> inference_;
};

}  // namespace model

class UNet : public SegmentationNet {
 public:
  // config.architecture: UNet, or AttentionUNet for the gates. `cpb` and `se`
  // do not apply (COVID-Rate's) and must keep their defaults.
  explicit UNet(const NetConfig& config);

  bool has_attention() const { return !gates_.empty(); }
  // Channel counts at this width: enc1..enc4, then the bridge.
  const std::vector<int>& encoder_channels() const { return encoder_channels_; }

 private:
  ag::Var features(const ag::Var& image) const override;
  void set_blocks_training(bool training) override;
  void prepare_blocks(DType compute, bool upsample_phases) override;

  struct Level {  // two conv, BN, ReLU
    model::ConvBnRelu first, second;
    // x by value: the caller's last reference to it is let go before `second` runs.
    ag::Var forward(ag::Var x) const {
      const ag::Var h = first.forward(x);
      x = ag::Var();
      return second.forward(h);
    }
  };
  std::vector<int> encoder_channels_;
  std::vector<Level> encoders_;            // enc1..enc4, bridge
  std::vector<model::ConvBnRelu> ups_;     // dec1..dec4's up-convolutions
  std::vector<model::AttentionGate> gates_;  // dec1..dec4's gates, empty in the standard U-Net
  std::vector<Level> decoders_;            // dec1..dec4
};

}  // namespace covidrate
