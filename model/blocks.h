// The building blocks of COVID-Rate (Enshaei et al., Sci. Rep. 2022):
// encoding units, context perception boosting (CPB) and decoding blocks.
// model/covidrate_net.h stacks them; every block registers its parameters in a
// ParameterStore under its module path ("enc2.unit1.conv1.weight"), and those
// names are the tensor names of saved weights.
//
// Every block also writes the arithmetic of its layers into a CostLedger, so
// the FLOP count of `covidrate model` comes from the same code that builds the
// network and cannot drift from it.
//
// prepare_inference(compute) builds a block's inference form (model/
// inference_form.h: BN folded, weights cast), which forward then runs instead
// of the layers; set_training(true) drops it. CovidRateNet calls both.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "model/inference_form.h"
#include "nn/layers.h"

namespace covidrate::model {

// Multiply-accumulates of one layer. Convolutions cost macs_per_pixel at each
// output pixel of a map downscale times smaller than the input image per side;
// the SE block's fully connected layers cost macs_per_image once per image.
struct LayerCost {
  std::string name;  // module path, e.g. "dec1.conv"
  int64_t macs_per_pixel = 0;
  int downscale = 1;
  int64_t macs_per_image = 0;
};
using CostLedger = std::vector<LayerCost>;

// Where a block sits: its name, its parameter store, the ledger it reports its
// cost to, and how many times smaller its output is than the input image.
struct BlockSite {
  ParameterStore& store;
  CostLedger& costs;
  std::string name;
  int downscale;
  BlockSite child(const std::string& suffix, int child_downscale) const {
    return {store, costs, name + "." + suffix, child_downscale};
  }
};

// A Conv2d that also records its cost (MACs per output pixel).
Conv2d make_conv(const BlockSite& site, const std::string& name, int in_channels, int out_channels,
                 int kernel, const Conv2d::Options& options = {});
// A SqueezeExcite (ratio 16) that records its two bias-free FC layers.
SqueezeExcite make_se(const BlockSite& site, const std::string& name, int channels);

// One conv -> BN -> ReLU.
class ConvBnRelu : public Module {
 public:
  ConvBnRelu(const BlockSite& site, const std::string& conv_name, const std::string& bn_name,
             int in_channels, int out_channels, int kernel, const Conv2d::Options& options = {});
  ag::Var forward(const ag::Var& x) const;
  // forward(upsample2x(x)); with the inference form of prepare_upsampled_inference,
  // computed at x's resolution (InferenceUpsampleConv).
  ag::Var forward_upsampled(const ag::Var& x) const;
  void set_training(bool training) override;
  void prepare_inference(DType compute);
  // The inference form for forward_upsampled: the four-phase convolution (3x3 'same' only).
  void prepare_upsampled_inference(DType compute);
  // That form once prepared, else null.
  const InferenceUpsampleConv* upsampled_form() const { return upsampled_ ? &*upsampled_ : nullptr; }

 private:
  Conv2d conv_;
  BatchNorm2d bn_;
  std::optional<InferenceConv> inference_;
  std::optional<InferenceUpsampleConv> upsampled_;
};

// An encoding unit: two 3x3 convs (the first with the unit's stride, the second
// with dilation 2), each followed by BN and ReLU, then residual SE (unless `se`
// is false: the paper's "Residual U-Net with CPB" baseline); plus a
// shortcut that is the identity (unit 2) or a 1x1 conv with the stride and BN
// (unit 1, which changes the channel count and halves the size). The two are
// summed, with no activation after the sum (as in the authors' code).
class EncoderUnit : public Module {
 public:
  EncoderUnit(const BlockSite& site, int in_channels, int out_channels, int stride, bool se = true);
  ag::Var forward(const ag::Var& x) const;
  void set_training(bool training) override;
  void prepare_inference(DType compute);

 private:
  ConvBnRelu first_, second_;
  std::optional<SqueezeExcite> se_;
  // Unit 1 only: the projection shortcut (absent: identity).
  std::optional<Conv2d> shortcut_;
  std::optional<BatchNorm2d> shortcut_bn_;
  struct Inference {
    std::optional<InferenceSe> se;
    std::optional<InferenceConv> shortcut;
  };
  std::optional<Inference> inference_;
};

// An encoding block: unit 1 (stride 2, projection shortcut) then unit 2.
class EncoderBlock : public Module {
 public:
  EncoderBlock(const BlockSite& site, int in_channels, int out_channels, bool se = true);
  ag::Var forward(const ag::Var& x) const;
  void set_training(bool training) override;
  void prepare_inference(DType compute);

 private:
  EncoderUnit unit1_, unit2_;
};

// Context perception boosting: a 1x1 conv and 3x3 convs with dilation 1, 2, 4
// and 8 on the same input, summed, then BN and ReLU. The five kernels carry
// the L2 penalty of the paper (0.01). Its inference form folds BN's scale into
// every branch and its shift into the first branch's bias.
class ContextPerceptionBoosting : public Module {
 public:
  static constexpr double kL2 = 0.01;
  ContextPerceptionBoosting(const BlockSite& site, int in_channels, int out_channels);
  ag::Var forward(const ag::Var& x) const;
  void set_training(bool training) override;
  void prepare_inference(DType compute);

 private:
  std::vector<Conv2d> branches_;
  BatchNorm2d bn_;
  std::optional<std::vector<InferenceConv>> inference_;
};

// A decoding block: 2x nearest upsampling -> 3x3 conv -> BN -> ReLU; the skip
// passes a 1x1 "transition" conv + ReLU; the two are concatenated
// [upsampled, transition] and go through a 3x3 conv with dilation 2 -> BN ->
// ReLU -> residual SE (none when `se` is false). In the inference form the
// upsampling and the conv after it are one four-phase convolution at the
// coarse resolution (InferenceUpsampleConv).
class DecoderBlock : public Module {
 public:
  DecoderBlock(const BlockSite& site, int in_channels, int skip_channels, int out_channels, bool se = true);
  // Takes its inputs by value and drops them once used: move them in, and
  // inference frees each map as soon as the next is made (blocks.cpp).
  ag::Var forward(ag::Var x, ag::Var skip) const;
  void set_training(bool training) override;
  // upsample_phases: the upsampling and up-conv as one InferenceUpsampleConv.
  void prepare_inference(DType compute, bool upsample_phases);

 private:
  ConvBnRelu up_;
  Conv2d transition_;
  ConvBnRelu fuse_;
  std::optional<SqueezeExcite> se_;
  struct Inference {
    InferenceConv transition;
    std::optional<InferenceSe> se;
  };
  std::optional<Inference> inference_;
  // The concatenation of the upsampled path and the transition, each written
  // straight into its half; nullopt when that does not apply (blocks.cpp).
  std::optional<ag::Var> joined_in_place(const ag::Var& x, const ag::Var& skip) const;
};

// Whether DecoderBlock writes its two paths into their concatenation in place
// when it can (the default), or concatenates copies: for tests that compare
// the two and benchmarks that time them. Process-wide.
void set_decoder_concat_in_place(bool on);
bool decoder_concat_in_place();

}  // namespace covidrate::model
