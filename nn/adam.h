// Adam over a ParameterStore, as the COVID-Rate reference code trains with
// Keras 2: Adam with learning-rate decay (see AdamParams in kernels/ops.h) and
// L2 weight penalties given per parameter (Keras' kernel_regularizer=l2(lambda)).
//
// A step:
//   1. for each parameter with lambda > 0: grad += 2 * lambda * w
//      (the gradient of the penalty lambda * sum(w^2) Keras adds to the loss);
//   2. one ops::adam_step over the flat value, gradient, m and v buffers.
// The store's flat buffers make step 2 a single kernel for the whole network.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "nn/parameters.h"

namespace covidrate {

class Adam {
 public:
  Adam(ParameterStore& store, const AdamParams& params);

  // Zeroes every parameter gradient (call before each forward/backward).
  void zero_grad() { store_.zero_grad(); }
  // Applies the gradients accumulated since zero_grad().
  void step();

  int64_t steps() const { return step_; }
  const AdamParams& params() const { return params_; }
  void set_params(const AdamParams& params) { params_ = params; }
  // The learning rate of the next step (with decay and bias correction).
  double current_lr() const;
  // The L2 penalty sum(lambda * w^2) over the parameters. Not in the logged
  // losses (train_loss and val_loss are the hybrid loss alone); for tests and
  // for a caller that wants the full objective.
  double l2_penalty() const;

  // The optimizer state for resuming: m and v of each parameter ("m.<name>",
  // "v.<name>") and the step count (metadata "step").
  void save(const std::string& path) const;
  void load(const std::string& path);

 private:
  ParameterStore& store_;
  AdamParams params_;
  int64_t step_ = 0;
};

}  // namespace covidrate
