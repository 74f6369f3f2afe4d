// A minimal reverse-mode autograd: a tape of coarse nodes.
//
// A network of COVID-Rate's size records about 130 nodes per forward pass
// (one per conv, batchnorm, activation, ...), so the tape is a plain vector of
// closures, replayed in reverse by Tape::backward. Each closure calls the
// backward functions of kernels/ops.h.
//
//   Tape tape;                                   // becomes the current tape
//   Var y = ag::relu(ag::conv2d(x, w, b, p));    // ops record onto it
//   Var loss = ag::hybrid_loss(ag::sigmoid(y), target, {});
//   tape.backward(loss);                         // gradients land in w.grad(), b.grad()
//
// Gradients follow the contract of kernels/ops.h:
//   - an activation's gradient is allocated when the first consumer writes it
//     (accumulate = false) and later consumers add to it (accumulate = true):
//     that is how a value used twice, as by a residual connection, receives
//     both contributions;
//   - a parameter's gradient is a view into the flat gradient buffer of the
//     ParameterStore and always accumulates; the optimizer zeroes it.
// With no current tape, or inside a NoGrad scope, nothing is recorded and the
// ops only compute their forward (inference).
//
// Everything runs on the device of the inputs; all inputs of one op share it.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "kernels/ops.h"
#include "nn/tensor.h"

namespace covidrate::ag {

class Var {
 public:
  Var() = default;  // undefined (an absent bias, for example)
  // A leaf value: an input image, or a tensor to differentiate with respect to.
  explicit Var(Tensor value, bool requires_grad = false);
  // A parameter whose gradient lives in grad (a view of the flat gradient
  // buffer); frozen parameters (trainable = false) take no gradient. grad may
  // be undefined: a store without training state (nn/parameters.h) has no
  // gradient buffer yet, and a backward that reaches the parameter is an Error.
  static Var parameter(Tensor value, Tensor grad, bool trainable);

  bool defined() const { return node_ != nullptr; }
  const Tensor& value() const;
  bool requires_grad() const;
  bool is_parameter() const;
  // Whether a gradient has been written (for a parameter: whether it has its
  // gradient buffer).
  bool has_grad() const;
  // The gradient; throws if none has been written.
  const Tensor& grad() const;

  // For ParameterStore: points a parameter at new storage (allocation, to(device),
  // the training state's arrival); grad undefined: no gradient buffer.
  void rebind_parameter(Tensor value, Tensor grad);

 private:
  struct Node {
    Tensor value;
    Tensor grad;                // allocated on first write (activations) or a view (parameters)
    bool grad_written = false;  // false: the next write overwrites
    bool requires_grad = false;
    bool is_parameter = false;
  };
  std::shared_ptr<Node> node_;
  friend struct GradAccess;
};

class Tape {
 public:
  // Becomes the current tape of this thread until destroyed (tapes nest).
  Tape();
  ~Tape();
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  // The tape ops record onto, or null (no tape, or inside NoGrad).
  static Tape* current();

  // Records the backward of the op that produced out; it runs with out's
  // gradient if, by then, anything has written one.
  void record(const Var& out, std::function<void(const Tensor& dout)> backward);

  // Seeds d(loss)/d(loss) = 1 for a one-element loss, runs the recorded
  // backwards in reverse order and empties the tape. Gradients of the
  // intermediate values are freed as soon as they have been used; leaf and
  // parameter gradients remain.
  void backward(const Var& loss);

  size_t size() const { return nodes_.size(); }
  void clear() { nodes_.clear(); }

 private:
  struct Node {
    Var out;
    std::function<void(const Tensor&)> backward;
  };
  std::vector<Node> nodes_;
  Tape* previous_ = nullptr;
};

// Inside this scope nothing is recorded (inference, validation, metrics).
class NoGrad {
 public:
  NoGrad();
  ~NoGrad();
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  Tape* saved_;
};

// ---------------------------------------------------------------- ops on the tape
// b may be undefined (no bias).
Var conv2d(const Var& x, const Var& w, const Var& b, const ConvParams& p);
// training: normalizes with the batch statistics and updates the running
// averages (in place); otherwise uses the running averages. Evaluation mode
// has no backward: run it inside NoGrad.
Var batchnorm(const Var& x, const Var& gamma, const Var& beta, Tensor& running_mean,
              Tensor& running_var, const BatchNormParams& p, bool training);
Var relu(const Var& x);
Var sigmoid(const Var& x);
Var add(const Var& a, const Var& b);
// x [N, C, H, W] times s [N, C] per channel.
Var mul_channel(const Var& x, const Var& s);
Var mul_pixel(const Var& x, const Var& a);  // x [N, C, H, W] * a [N, 1, H, W] (a gate per pixel)
Var concat(const std::vector<Var>& parts);  // along channels
Var upsample2x(const Var& x);
// The phases of an upsampled 3x3 convolution on the fine grid, + bias (may be
// undefined), then the ReLU when relu (ops::interleave_phases_forward). The
// inference form's op: no backward, run it inside NoGrad.
Var interleave_phases(const Var& z, const Var& bias, bool relu);
Var maxpool2x2(const Var& x);
Var global_avg_pool(const Var& x);  // [N, C, H, W] -> [N, C]
Var linear(const Var& x, const Var& w);  // [N, In] x [Out, In]^T, no bias
// The residual squeeze-and-excitation block (ops::se_forward): x * s(x) + x.
Var se(const Var& x, const Var& w1, const Var& w2);
// The hybrid loss on probabilities p against a binary target: a one-element
// Var. If sums is given, it receives TP/FP/FN and the BCE sum for logging.
Var hybrid_loss(const Var& p, const Tensor& target, const HybridLossParams& params,
                LossSums* sums = nullptr);

}  // namespace covidrate::ag
