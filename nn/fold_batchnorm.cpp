#include "nn/fold_batchnorm.h"

#include <cmath>
#include <vector>

#include "kernels/ops.h"

namespace covidrate {

ChannelAffine batchnorm_affine(const BatchNorm2d& bn) {
  const std::vector<double> gamma = bn.gamma().value().to_vector_f64();
  const std::vector<double> beta = bn.beta().value().to_vector_f64();
  const std::vector<double> mean = bn.running_mean().to_vector_f64();
  const std::vector<double> var = bn.running_var().to_vector_f64();
  ChannelAffine affine{std::vector<double>(gamma.size()), std::vector<double>(gamma.size())};
  for (size_t o = 0; o < gamma.size(); ++o) {
    affine.scale[o] = gamma[o] / std::sqrt(var[o] + bn.params().eps);
    affine.shift[o] = beta[o] - affine.scale[o] * mean[o];
  }
  return affine;
}

FoldedConv fold_batchnorm(const Conv2d& conv, const BatchNorm2d& bn) {
  const Tensor& w = conv.weight().value();
  const int64_t out = w.shape()[0];
  CR_CHECK(bn.gamma().value().numel() == out,
           "fold_batchnorm: conv '" << conv.name() << "' has " << out << " output channels, BN '"
                                    << bn.name() << "' " << bn.gamma().value().numel());
  const ChannelAffine affine = batchnorm_affine(bn);
  const std::vector<double>& scale = affine.scale;
  std::vector<double> shift = affine.shift;
  if (conv.bias().defined()) {
    const std::vector<double> bias = conv.bias().value().to_vector_f64();
    for (int64_t o = 0; o < out; ++o) shift[o] += scale[o] * bias[o];
  }
  FoldedConv folded{Tensor::empty(w.shape(), w.dtype(), w.device()),
                    Tensor::from_vector(Shape{out}, shift, w.dtype()).to(w.device())};
  // The kernel as [1, out, in, k*k]: one channel scale per output channel.
  const Shape rows{1, out, w.shape()[1], w.shape()[2] * w.shape()[3]};
  Tensor folded_rows = folded.weight.reshape(rows);
  ops::mul_channel_forward(w.reshape(rows),
                           Tensor::from_vector(Shape{1, out}, scale, w.dtype()).to(w.device()),
                           folded_rows);
  return folded;
}

ag::Var conv_bn_eval(const Conv2d& conv, const BatchNorm2d& bn, const ag::Var& x) {
  const FoldedConv folded = fold_batchnorm(conv, bn);
  return ag::conv2d(x, ag::Var(folded.weight), ag::Var(folded.bias), conv.params());
}

}  // namespace covidrate
