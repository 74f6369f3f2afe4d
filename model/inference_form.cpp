#include "model/inference_form.h"

#include "kernels/ops.h"

namespace covidrate::model {

namespace {

// Host float64 values -> a tensor in `dtype` on `device`, rounded once.
Tensor rounded_once(const Shape& shape, const std::vector<double>& values, DType dtype, Device device) {
  return Tensor::from_vector(shape, values, DType::F64).to(dtype).to(device);
}

}  // namespace

std::vector<InferenceConv> fold_for_inference(const std::vector<const Conv2d*>& convs,
                                              const ChannelAffine* affine, DType compute) {
  CR_CHECK(!convs.empty(), "fold_for_inference: no convolution");
  const Tensor& first = convs.front()->weight().value();
  const int64_t out = first.shape()[0];
  const std::vector<double> scale = affine ? affine->scale : std::vector<double>(out, 1.0);
  std::vector<double> bias = affine ? affine->shift : std::vector<double>(out, 0.0);
  CR_CHECK(static_cast<int64_t>(scale.size()) == out,
           "fold_for_inference: conv '" << convs.front()->name() << "' has " << out
                                        << " output channels, the batch norm after it " << scale.size());
  bool any_bias = affine != nullptr;

  std::vector<InferenceConv> folded;
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
      for (int64_t o = 0; o < out; ++o) bias[o] += scale[o] * b[o];
      any_bias = true;
    }
    ConvParams params = conv->params();
    params.inference = true;  // forward only: the CPU's faster Winograd tiles
    folded.push_back({ag::Var(rounded_once(w.shape(), kernel, compute, w.device())), ag::Var(), params});
  }
  if (any_bias) folded.front().bias = ag::Var(rounded_once(Shape{out}, bias, compute, first.device()));
  return folded;
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
