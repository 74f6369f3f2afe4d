// The building blocks of a network: each registers its parameters in a
// ParameterStore under "<name>.<parameter>" and calls the ops of the tape.
//
// Initialization follows Keras, the framework of the COVID-Rate reference code,
// with its defaults (the reference code itself passes he_normal to most of its
// convolutions; docs/training.md says why that is not followed yet):
//   - Conv2d and Linear kernels: glorot_uniform, U(-l, l) with
//     l = sqrt(6 / (fan_in + fan_out)), fan = channels * kernel area;
//     Conv2d biases: zeros.
//   - SqueezeExcite: he_normal, the initializer of the common Keras SE block:
//     a normal truncated at two standard deviations, scaled so the variance
//     is 2 / fan_in.
//   - BatchNorm2d: gamma 1, beta 0, running mean 0, running variance 1.
// The generator is the store's init_rng(), so a seed fixes every weight; a
// store that does not draw (ParameterStore::set_draw_initial_values) gets zeros.
#pragma once
#include <string>

#include "nn/autograd.h"
#include "nn/parameters.h"

namespace covidrate {

// What every module has: its name prefix and whether it is training.
// Only BatchNorm2d behaves differently in evaluation; composite modules
// forward set_training to their children.
class Module {
 public:
  explicit Module(std::string name) : name_(std::move(name)) {}
  virtual ~Module() = default;
  const std::string& name() const { return name_; }
  bool training() const { return training_; }
  virtual void set_training(bool training) { training_ = training; }

 private:
  std::string name_;
  bool training_ = true;
};

class Conv2d : public Module {
 public:
  struct Options {
    int stride = 1;
    int dilation = 1;
    bool bias = true;
    double l2 = 0.0;  // Keras kernel_regularizer=l2(l2) on the weight
  };
  // "same" padding: stride 1 keeps the size, stride 2 halves it.
  Conv2d(ParameterStore& store, const std::string& name, int in_channels, int out_channels,
         int kernel, const Options& options);
  Conv2d(ParameterStore& store, const std::string& name, int in_channels, int out_channels, int kernel)
      : Conv2d(store, name, in_channels, out_channels, kernel, Options{}) {}
  ag::Var forward(const ag::Var& x) const;
  const ag::Var& weight() const { return weight_; }
  const ag::Var& bias() const { return bias_; }
  const ConvParams& params() const { return params_; }

 private:
  ConvParams params_;
  ag::Var weight_, bias_;  // [out, in, k, k] and [out] (undefined without bias)
};

class BatchNorm2d : public Module {
 public:
  BatchNorm2d(ParameterStore& store, const std::string& name, int channels,
              const BatchNormParams& params = {});
  // Training: batch statistics, running averages updated. Evaluation: running
  // averages (no backward: call it inside NoGrad).
  ag::Var forward(const ag::Var& x) const;
  const ag::Var& gamma() const { return gamma_; }
  const ag::Var& beta() const { return beta_; }
  const Tensor& running_mean() const { return *running_mean_; }
  const Tensor& running_var() const { return *running_var_; }
  const BatchNormParams& params() const { return params_; }

 private:
  BatchNormParams params_;
  ag::Var gamma_, beta_;
  Tensor* running_mean_;  // owned by the store, which re-points them on to(device)
  Tensor* running_var_;
};

// The residual squeeze-and-excitation block: x * sigmoid(W2 relu(W1 gap(x))) + x,
// with bias-free FC layers of C -> C/ratio -> C.
class SqueezeExcite : public Module {
 public:
  SqueezeExcite(ParameterStore& store, const std::string& name, int channels, int ratio = 16);
  ag::Var forward(const ag::Var& x) const;
  const ag::Var& fc1_weight() const { return w1_; }
  const ag::Var& fc2_weight() const { return w2_; }

 private:
  ag::Var w1_, w2_;  // [C/ratio, C] and [C, C/ratio]
};

// y = x W^T without bias, W [out, in].
class Linear : public Module {
 public:
  Linear(ParameterStore& store, const std::string& name, int in_features, int out_features,
         double l2 = 0.0);
  ag::Var forward(const ag::Var& x) const;

 private:
  ag::Var weight_;
};

// Initial values drawn from the store's generator, in the store's dtype.
Tensor glorot_uniform(ParameterStore& store, const Shape& shape, int64_t fan_in, int64_t fan_out);
Tensor he_normal(ParameterStore& store, const Shape& shape, int64_t fan_in);

}  // namespace covidrate
