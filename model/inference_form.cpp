#include "model/inference_form.h"

#include "kernels/ops.h"

namespace covidrate::model {

namespace {

// Host float64 values -> a tensor in `dtype` on `device`, rounded once.
Tensor rounded_once(const Shape& shape, const std::vector<double>& values, DType dtype, Device device) {
  return Tensor::from_vector(shape, values, DType::F64).to(dtype).to(device);
}

}  // namespace

FoldedF64 fold_in_f64(const std::vector<const Conv2d*>& convs, const ChannelAffine* affine) {
  CR_CHECK(!convs.empty(), "fold_for_inference: no convolution");
  const Tensor& first = convs.front()->weight().value();
  const int64_t out = first.shape()[0];
  const std::vector<double> scale = affine ? affine->scale : std::vector<double>(out, 1.0);
  FoldedF64 folded;
  folded.bias = affine ? affine->shift : std::vector<double>(out, 0.0);
  CR_CHECK(static_cast<int64_t>(scale.size()) == out,
           "fold_for_inference: conv '" << convs.front()->name() << "' has " << out
                                        << " output channels, the batch norm after it " << scale.size());
  folded.any_bias = affine != nullptr;

  for (const Conv2d* conv : convs) {
    const Tensor& w = conv->weight().value();
    CR_CHECK(w.shape()[0] == out, "fold_for_inference: conv '" << conv->name() << "' has " << w.shape()[0]
                                                               << " output channels, '" << convs.front()->name()
                                                               << "' " << out << " (they are summed)");
    std::vector<double> kernel = w.to_vector_f64();
    const int64_t per_channel = w.numel() / out;
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < per_channel; ++i) kernel[o * per_channel + i] *= scale[o];
    if (conv->bias().defined()) {
      const std::vector<double> b = conv->bias().value().to_vector_f64();
      for (int64_t o = 0; o < out; ++o) folded.bias[o] += scale[o] * b[o];
      folded.any_bias = true;
    }
    folded.kernels.push_back(std::move(kernel));
  }
  return folded;
}

std::vector<InferenceConv> fold_for_inference(const std::vector<const Conv2d*>& convs,
                                              const ChannelAffine* affine, DType compute) {
  const FoldedF64 f64 = fold_in_f64(convs, affine);
  std::vector<InferenceConv> folded;
  for (size_t k = 0; k < convs.size(); ++k) {
    const Tensor& w = convs[k]->weight().value();
    ConvParams params = convs[k]->params();
    params.inference = true;  // forward only: the CPU's faster Winograd tiles
    folded.push_back({ag::Var(rounded_once(w.shape(), f64.kernels[k], compute, w.device())), ag::Var(), params});
  }
  const Tensor& first = convs.front()->weight().value();
  if (f64.any_bias)
    folded.front().bias = ag::Var(rounded_once(Shape{first.shape()[0]}, f64.bias, compute, first.device()));
  return folded;
}

// ---------------------------------------------------------------- upsampled 3x3 convolution
std::vector<double> phase_kernels(const std::vector<double>& kernel3x3, int64_t out, int64_t in) {
  CR_CHECK(static_cast<int64_t>(kernel3x3.size()) == out * in * 9,
           "phase_kernels: " << kernel3x3.size() << " values are not a [" << out << ", " << in << ", 3, 3] kernel");
  // taps[a][r]: the rows k of the 3x3 kernel that phase a's row r sums (see the header).
  static constexpr int kTaps[2][2][2] = {{{0, -1}, {1, 2}}, {{0, 1}, {2, -1}}};
  std::vector<double> phases(static_cast<size_t>(4 * out * in * 4), 0.0);
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b)
      for (int64_t o = 0; o < out; ++o)
        for (int64_t i = 0; i < in; ++i) {
          const double* k3 = kernel3x3.data() + (o * in + i) * 9;
          double* k2 = phases.data() + (((2 * a + b) * out + o) * in + i) * 4;
          for (int r = 0; r < 2; ++r)
            for (int s = 0; s < 2; ++s) {
              double sum = 0;
              for (const int k : kTaps[a][r])
                for (const int l : kTaps[b][s])
                  if (k >= 0 && l >= 0) sum += k3[k * 3 + l];
              k2[r * 2 + s] = sum;
            }
        }
  return phases;
}

ag::Var InferenceUpsampleConv::forward(const ag::Var& x) const {
  const ag::Var phased = ag::conv2d(x, phases, ag::Var(), params);
  return ag::interleave_phases(phased, bias, relu);
}

void InferenceUpsampleConv::forward_into(const ag::Var& x, Tensor& y) const {
  CR_CHECK(ag::Tape::current() == nullptr, "InferenceUpsampleConv::forward_into: inference only (no tape)");
  const ag::Var phased = ag::conv2d(x, phases, ag::Var(), params);
  ops::interleave_phases_forward(phased.value(), bias.defined() ? &bias.value() : nullptr, relu, y);
}

void InferenceConv::forward_into(const ag::Var& x, Tensor& y) const {
  CR_CHECK(ag::Tape::current() == nullptr, "InferenceConv::forward_into: inference only (no tape)");
  ConvParams p = params;
  p.inference = true;  // as ag::conv2d computes without a tape
  ops::conv2d_forward(x.value(), weight.value(), bias.defined() ? &bias.value() : nullptr, p, y);
}

InferenceUpsampleConv upsample_conv_for_inference(const Conv2d& conv, const ChannelAffine* affine, bool relu,
                                                  DType compute) {
  const Tensor& w = conv.weight().value();
  const ConvParams& p = conv.params();
  CR_CHECK(w.h() == 3 && w.w() == 3 && p.stride == 1 && p.dilation == 1 && p.pad == 1,
           "upsample_conv_for_inference: conv '" << conv.name() << "' is " << w.shape().str() << " with stride "
                                                 << p.stride << ", dilation " << p.dilation << ", pad " << p.pad
                                                 << "; only a 3x3 'same' convolution has the four-phase form");
  const FoldedF64 f64 = fold_in_f64({&conv}, affine);
  const int64_t out = w.n(), in = w.c();
  InferenceUpsampleConv form;
  form.phases = ag::Var(rounded_once(Shape{4 * out, in, 2, 2}, phase_kernels(f64.kernels[0], out, in), compute,
                                     w.device()));
  if (f64.any_bias) form.bias = ag::Var(rounded_once(Shape{out}, f64.bias, compute, w.device()));
  form.params.pad = 1;  // a 2x2 kernel over rows i-1..i+1: H+1 phase rows
  form.params.inference = true;
  form.relu = relu;
  return form;
}

InferenceSe cast_for_inference(const SqueezeExcite& se, DType compute) {
  const auto cast = [compute](const ag::Var& w) {
    const Tensor& t = w.value();
    return ag::Var(rounded_once(t.shape(), t.to_vector_f64(), compute, t.device()));
  };
  return {cast(se.fc1_weight()), cast(se.fc2_weight())};
}

Tensor cast_to(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor y = Tensor::empty(x.shape(), dtype, x.device());
  ops::cast(x, y);
  return y;
}

}  // namespace covidrate::model
