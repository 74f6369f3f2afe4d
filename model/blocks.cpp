#include "model/blocks.h"

#include <algorithm>
#include <atomic>
#include <optional>
#include <utility>

#include "nn/fold_batchnorm.h"

namespace covidrate::model {

Conv2d make_conv(const BlockSite& site, const std::string& name, int in_channels, int out_channels,
                 int kernel, const Conv2d::Options& options) {
  const std::string path = site.name + "." + name;
  site.costs.push_back({path, int64_t{in_channels} * out_channels * kernel * kernel, site.downscale, 0});
  return Conv2d(site.store, path, in_channels, out_channels, kernel, options);
}

SqueezeExcite make_se(const BlockSite& site, const std::string& name, int channels) {
  const std::string path = site.name + "." + name;
  // Must match SqueezeExcite's hidden width: C -> max(1, C/16) -> C.
  const int64_t hidden = std::max(1, channels / 16);
  site.costs.push_back({path, 0, site.downscale, 2 * hidden * channels});
  return SqueezeExcite(site.store, path, channels, 16);
}

// Evaluation on the CPU folds BN into the conv before it (nn/fold_batchnorm.h;
// CPB's BN, after a sum of five convs, is not: the inference form folds it):
// one memory-bound pass fewer over the output. Not on CUDA: folding reads the
// per-channel factors back to the host, synchronous copies at every layer that
// were not measured to pay for the BN kernel they save. (The inference form
// folds once, on either device; blocks that hold it never get here.)
namespace {
bool folds_batchnorm(const Module& block, const ag::Var& x) {
  return !block.training() && !x.value().is_cuda();
}

// The sum of several convolutions of one input (Conv2d or InferenceConv).
template <class Conv> ag::Var sum_of(const std::vector<Conv>& convs, const ag::Var& x) {
  ag::Var sum = convs.front().forward(x);
  for (size_t i = 1; i < convs.size(); ++i) sum = ag::add(sum, convs[i].forward(x));
  return sum;
}

// The one conv of a conv (+ BN) (+ ReLU) in the inference form. The ReLU is
// fused into the convolution (ConvParams::relu): one pass less over its output.
InferenceConv fold_one(const Conv2d& conv, const BatchNorm2d* bn, bool relu, DType compute) {
  InferenceConv folded;
  if (bn) {
    const ChannelAffine affine = batchnorm_affine(*bn);
    folded = fold_for_inference({&conv}, &affine, compute).front();
  } else {
    folded = fold_for_inference({&conv}, nullptr, compute).front();
  }
  folded.params.relu = relu;
  return folded;
}
}  // namespace

// ---------------------------------------------------------------- ConvBnRelu
ConvBnRelu::ConvBnRelu(const BlockSite& site, const std::string& conv_name, const std::string& bn_name,
                       int in_channels, int out_channels, int kernel, const Conv2d::Options& options)
    : Module(site.name),
      conv_(make_conv(site, conv_name, in_channels, out_channels, kernel, options)),
      bn_(site.store, site.name + "." + bn_name, out_channels) {}

ag::Var ConvBnRelu::forward(const ag::Var& x) const {
  if (inference_) return inference_->forward(x);  // BN folded in, ReLU fused
  if (folds_batchnorm(*this, x)) return ag::relu(conv_bn_eval(conv_, bn_, x));
  return ag::relu(bn_.forward(conv_.forward(x)));
}

ag::Var ConvBnRelu::forward_upsampled(const ag::Var& x) const {
  if (upsampled_) return upsampled_->forward(x);
  return forward(ag::upsample2x(x));
}

void ConvBnRelu::set_training(bool training) {
  Module::set_training(training);
  bn_.set_training(training);
  if (training) {
    inference_.reset();
    upsampled_.reset();
  }
}

void ConvBnRelu::prepare_inference(DType compute) {
  upsampled_.reset();
  inference_ = fold_one(conv_, &bn_, /*relu=*/true, compute);
}

void ConvBnRelu::prepare_upsampled_inference(DType compute) {
  inference_.reset();
  const ChannelAffine affine = batchnorm_affine(bn_);
  upsampled_ = upsample_conv_for_inference(conv_, &affine, /*relu=*/true, compute);
}

// ---------------------------------------------------------------- EncoderUnit
namespace {
Conv2d::Options strided(int stride) {
  Conv2d::Options o;
  o.stride = stride;
  return o;
}
Conv2d::Options dilated(int dilation, double l2 = 0.0) {
  Conv2d::Options o;
  o.dilation = dilation;
  o.l2 = l2;
  return o;
}
}  // namespace

EncoderUnit::EncoderUnit(const BlockSite& site, int in_channels, int out_channels, int stride, bool se)
    : Module(site.name),
      first_(site, "conv1", "bn1", in_channels, out_channels, 3, strided(stride)),
      second_(site, "conv2", "bn2", out_channels, out_channels, 3, dilated(2)) {
  if (se) se_.emplace(make_se(site, "se", out_channels));
  if (stride != 1 || in_channels != out_channels) {
    shortcut_.emplace(make_conv(site, "shortcut", in_channels, out_channels, 1, strided(stride)));
    shortcut_bn_.emplace(site.store, site.name + ".shortcut_bn", out_channels);
  }
}

ag::Var EncoderUnit::forward(const ag::Var& x) const {
  const ag::Var convs = second_.forward(first_.forward(x));
  const ag::Var residual = !se_        ? convs
                           : inference_ ? inference_->se->forward(convs)
                                        : se_->forward(convs);
  if (!shortcut_) return ag::add(residual, x);
  const ag::Var shortcut = inference_                    ? inference_->shortcut->forward(x)
                           : folds_batchnorm(*this, x) ? conv_bn_eval(*shortcut_, *shortcut_bn_, x)
                                                       : shortcut_bn_->forward(shortcut_->forward(x));
  return ag::add(residual, shortcut);
}

void EncoderUnit::set_training(bool training) {
  Module::set_training(training);
  first_.set_training(training);
  second_.set_training(training);
  if (shortcut_bn_) shortcut_bn_->set_training(training);
  if (training) inference_.reset();
}

void EncoderUnit::prepare_inference(DType compute) {
  first_.prepare_inference(compute);
  second_.prepare_inference(compute);
  inference_ = Inference{};
  if (se_) inference_->se = cast_for_inference(*se_, compute);
  if (shortcut_) inference_->shortcut = fold_one(*shortcut_, &*shortcut_bn_, /*relu=*/false, compute);
}

// ---------------------------------------------------------------- EncoderBlock
EncoderBlock::EncoderBlock(const BlockSite& site, int in_channels, int out_channels, bool se)
    : Module(site.name),
      unit1_(site.child("unit1", site.downscale), in_channels, out_channels, 2, se),
      unit2_(site.child("unit2", site.downscale), out_channels, out_channels, 1, se) {}

ag::Var EncoderBlock::forward(const ag::Var& x) const { return unit2_.forward(unit1_.forward(x)); }

void EncoderBlock::set_training(bool training) {
  Module::set_training(training);
  unit1_.set_training(training);
  unit2_.set_training(training);
}

void EncoderBlock::prepare_inference(DType compute) {
  unit1_.prepare_inference(compute);
  unit2_.prepare_inference(compute);
}

// ---------------------------------------------------------------- CPB
ContextPerceptionBoosting::ContextPerceptionBoosting(const BlockSite& site, int in_channels,
                                                     int out_channels)
    : Module(site.name), bn_(site.store, site.name + ".bn", out_channels) {
  branches_.push_back(make_conv(site, "conv1x1", in_channels, out_channels, 1, dilated(1, kL2)));
  for (const int d : {1, 2, 4, 8})
    branches_.push_back(make_conv(site, "conv_d" + std::to_string(d), in_channels, out_channels, 3,
                                  dilated(d, kL2)));
}

ag::Var ContextPerceptionBoosting::forward(const ag::Var& x) const {
  if (inference_) return ag::relu(sum_of(*inference_, x));  // BN is inside the branches
  return ag::relu(bn_.forward(sum_of(branches_, x)));
}

void ContextPerceptionBoosting::set_training(bool training) {
  Module::set_training(training);
  bn_.set_training(training);
  if (training) inference_.reset();
}

void ContextPerceptionBoosting::prepare_inference(DType compute) {
  std::vector<const Conv2d*> branches;
  for (const Conv2d& b : branches_) branches.push_back(&b);
  const ChannelAffine affine = batchnorm_affine(bn_);
  inference_ = fold_for_inference(branches, &affine, compute);
}

// ---------------------------------------------------------------- DecoderBlock
DecoderBlock::DecoderBlock(const BlockSite& site, int in_channels, int skip_channels, int out_channels, bool se)
    : Module(site.name),
      up_(site, "up_conv", "up_bn", in_channels, out_channels, 3),
      transition_(make_conv(site, "transition", skip_channels, out_channels, 1)),
      fuse_(site, "conv", "bn", 2 * out_channels, out_channels, 3, dilated(2)) {
  if (se) se_.emplace(make_se(site, "se", out_channels));
}

namespace {
std::atomic<bool> concat_in_place{true};
}  // namespace

void set_decoder_concat_in_place(bool on) { concat_in_place = on; }
bool decoder_concat_in_place() { return concat_in_place; }

// In inference at batch 1 the two channel halves of [1, 2C, H, W] are each one
// contiguous block, so the upsampled path and the transition can be computed
// straight into them: no concatenation copy (35.6 of a 512² slice's 828 ms on
// two CPU cores at dec4, 57.5 ms over the four decoders) and no third map of
// that size alive at the decoder's peak. Larger batches interleave the halves
// per image, so they concatenate copies.
std::optional<ag::Var> DecoderBlock::joined_in_place(const ag::Var& x, const ag::Var& skip) const {
  const InferenceUpsampleConv* up = up_.upsampled_form();
  if (!concat_in_place || !inference_ || !up || ag::Tape::current() != nullptr || x.value().n() != 1)
    return std::nullopt;
  const Tensor& xs = x.value();
  const Tensor& s = skip.value();
  CR_CHECK(2 * xs.h() == s.h() && 2 * xs.w() == s.w() && s.n() == 1,
           "DecoderBlock '" << name() << "': upsampled path of " << xs.shape().str() << " and skip "
                            << s.shape().str() << " differ in size");
  const int64_t c = inference_->transition.weight.value().n();
  CR_CHECK(up->phases.value().n() == 4 * c, "DecoderBlock '" << name() << "': the two paths' channels differ");
  Tensor joined = Tensor::empty(Shape{1, 2 * c, s.h(), s.w()}, xs.dtype(), xs.device());
  const Tensor halves = joined.reshape(Shape{2 * c, s.h(), s.w()});
  Tensor first = halves.slice_batch(0, c).reshape(Shape{1, c, s.h(), s.w()});
  Tensor second = halves.slice_batch(c, 2 * c).reshape(Shape{1, c, s.h(), s.w()});
  up->forward_into(x, first);
  inference_->transition.forward_into(skip, second);  // ReLU fused
  return ag::Var(joined);
}

ag::Var DecoderBlock::forward(ag::Var x, ag::Var skip) const {
  // Each map is let go as soon as what is made from it exists. Without a tape
  // (inference) nothing else holds them, and at full resolution they are 33 to
  // 134 MB each: dec4's peak was x, skip, up, transition, their concatenation
  // and the fused output together. With a tape the tape keeps what backward needs.
  ag::Var joined;
  if (std::optional<ag::Var> in_place = joined_in_place(x, skip)) {
    joined = std::move(*in_place);
    x = ag::Var();
    skip = ag::Var();
  } else {
    const ag::Var up = up_.forward_upsampled(x);
    x = ag::Var();
    CR_CHECK(up.value().h() == skip.value().h() && up.value().w() == skip.value().w(),
             "DecoderBlock '" << name() << "': upsampled path " << up.value().shape().str() << " and skip "
                              << skip.value().shape().str() << " differ in size");
    const ag::Var transition =
        inference_ ? inference_->transition.forward(skip) /* ReLU fused */ : ag::relu(transition_.forward(skip));
    skip = ag::Var();
    joined = ag::concat({up, transition});
  }
  const ag::Var fused = fuse_.forward(joined);
  joined = ag::Var();
  if (!se_) return fused;
  return inference_ ? inference_->se->forward(fused) : se_->forward(fused);
}

void DecoderBlock::set_training(bool training) {
  Module::set_training(training);
  up_.set_training(training);
  fuse_.set_training(training);
  if (training) inference_.reset();
}

void DecoderBlock::prepare_inference(DType compute, bool upsample_phases) {
  if (upsample_phases) {
    up_.prepare_upsampled_inference(compute);
  } else {
    up_.prepare_inference(compute);
  }
  fuse_.prepare_inference(compute);
  inference_ = Inference{fold_one(transition_, nullptr, /*relu=*/true, compute), std::nullopt};
  if (se_) inference_->se = cast_for_inference(*se_, compute);
}

}  // namespace covidrate::model
