#include "nn/layers.h"

#include <algorithm>
#include <cmath>

namespace covidrate {

Tensor glorot_uniform(ParameterStore& store, const Shape& shape, int64_t fan_in, int64_t fan_out) {
  if (!store.draws_initial_values()) return Tensor::zeros(shape, store.dtype());
  const double limit = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  std::uniform_real_distribution<double> dist(-limit, limit);
  std::vector<double> values(static_cast<size_t>(shape.numel()));
  for (double& v : values) v = dist(store.init_rng());
  return Tensor::from_vector(shape, values, store.dtype());
}

Tensor he_normal(ParameterStore& store, const Shape& shape, int64_t fan_in) {
  if (!store.draws_initial_values()) return Tensor::zeros(shape, store.dtype());
  // Keras draws from a normal truncated at +-2 sigma, whose variance is
  // 0.7737 sigma^2; dividing sigma by its square root 0.8796... restores
  // the intended variance 2 / fan_in.
  const double stddev = std::sqrt(2.0 / static_cast<double>(fan_in)) / 0.87962566103423978;
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<double> values(static_cast<size_t>(shape.numel()));
  for (double& v : values) {
    do v = dist(store.init_rng());
    while (std::abs(v) > 2.0 * stddev);
  }
  return Tensor::from_vector(shape, values, store.dtype());
}

// ---------------------------------------------------------------- Conv2d
Conv2d::Conv2d(ParameterStore& store, const std::string& name, int in_channels, int out_channels,
               int kernel, const Options& options)
    : Module(name), params_(ConvParams::same(kernel, options.stride, options.dilation)) {
  CR_CHECK(in_channels > 0 && out_channels > 0 && kernel > 0 && kernel % 2 == 1,
           "Conv2d '" << name << "': " << in_channels << " -> " << out_channels << " channels, kernel "
                      << kernel << " (need positive channels and an odd kernel for same padding)");
  const Shape shape{out_channels, in_channels, kernel, kernel};
  const int64_t area = static_cast<int64_t>(kernel) * kernel;
  weight_ = store.add_parameter(name + ".weight",
                                glorot_uniform(store, shape, in_channels * area, out_channels * area),
                                options.l2);
  if (options.bias)
    bias_ = store.add_parameter(name + ".bias", Tensor::zeros(Shape{out_channels}, store.dtype()));
}

ag::Var Conv2d::forward(const ag::Var& x) const { return ag::conv2d(x, weight_, bias_, params_); }

// ---------------------------------------------------------------- BatchNorm2d
BatchNorm2d::BatchNorm2d(ParameterStore& store, const std::string& name, int channels,
                         const BatchNormParams& params)
    : Module(name), params_(params) {
  CR_CHECK(channels > 0, "BatchNorm2d '" << name << "': " << channels << " channels");
  const Shape shape{channels};
  gamma_ = store.add_parameter(name + ".weight", Tensor::full(shape, 1.0, store.dtype()));
  beta_ = store.add_parameter(name + ".bias", Tensor::zeros(shape, store.dtype()));
  running_mean_ = &store.add_buffer(name + ".running_mean", Tensor::zeros(shape, store.dtype()));
  running_var_ = &store.add_buffer(name + ".running_var", Tensor::full(shape, 1.0, store.dtype()));
}

ag::Var BatchNorm2d::forward(const ag::Var& x) const {
  return ag::batchnorm(x, gamma_, beta_, *running_mean_, *running_var_, params_, training());
}

// ---------------------------------------------------------------- SqueezeExcite
SqueezeExcite::SqueezeExcite(ParameterStore& store, const std::string& name, int channels, int ratio)
    : Module(name) {
  CR_CHECK(channels > 0 && ratio > 0, "SqueezeExcite '" << name << "': " << channels
                                                        << " channels, ratio " << ratio);
  const int reduced = std::max(1, channels / ratio);
  w1_ = store.add_parameter(name + ".fc1.weight", he_normal(store, Shape{reduced, channels}, channels));
  w2_ = store.add_parameter(name + ".fc2.weight", he_normal(store, Shape{channels, reduced}, reduced));
}

ag::Var SqueezeExcite::forward(const ag::Var& x) const { return ag::se(x, w1_, w2_); }

// ---------------------------------------------------------------- Linear
Linear::Linear(ParameterStore& store, const std::string& name, int in_features, int out_features,
               double l2)
    : Module(name) {
  CR_CHECK(in_features > 0 && out_features > 0,
           "Linear '" << name << "': " << in_features << " -> " << out_features << " features");
  weight_ = store.add_parameter(
      name + ".weight",
      glorot_uniform(store, Shape{out_features, in_features}, in_features, out_features), l2);
}

ag::Var Linear::forward(const ag::Var& x) const { return ag::linear(x, weight_); }

}  // namespace covidrate
