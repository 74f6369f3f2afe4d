#include "nn/autograd.h"

#include <algorithm>

namespace covidrate::ag {

// ---------------------------------------------------------------- Var
Var::Var(Tensor value, bool requires_grad) : node_(std::make_shared<Node>()) {
  CR_CHECK(value.defined(), "Var: the value is undefined");
  node_->value = std::move(value);
  node_->requires_grad = requires_grad;
}

Var Var::parameter(Tensor value, Tensor grad, bool trainable) {
  Var v(std::move(value), trainable);
  v.node_->is_parameter = true;
  // A parameter's gradient buffer counts as already written: every backward
  // that reaches it accumulates (a weight used twice sums both paths, and a
  // step's gradient adds to what zero_grad cleared), never overwrites. An
  // activation's first write overwrites. See activation() and accumulating().
  v.node_->grad_written = true;
  v.rebind_parameter(v.node_->value, std::move(grad));
  return v;
}

void Var::rebind_parameter(Tensor value, Tensor grad) {
  CR_CHECK(defined() && node_->is_parameter, "Var::rebind_parameter: not a parameter");
  CR_CHECK(!grad.defined() ||
               (grad.shape() == value.shape() && grad.dtype() == value.dtype() && grad.device() == value.device()),
           "Var::rebind_parameter: gradient " << grad.str() << " does not match value " << value.str());
  node_->value = std::move(value);
  node_->grad = std::move(grad);
}

const Tensor& Var::value() const {
  CR_CHECK(defined(), "Var::value: the Var is undefined");
  return node_->value;
}
bool Var::requires_grad() const { return defined() && node_->requires_grad; }
bool Var::is_parameter() const { return defined() && node_->is_parameter; }
bool Var::has_grad() const { return defined() && node_->grad_written && node_->grad.defined(); }
const Tensor& Var::grad() const {
  CR_CHECK(!is_parameter() || node_->grad.defined(),
           "Var::grad: the parameter " << value().str() << " has no gradient buffer: its ParameterStore has "
                                       "no training state (ParameterStore::ensure_training_state)");
  CR_CHECK(has_grad(), "Var::grad: no gradient has been written to " << (defined() ? value().str() : "an undefined Var"));
  return node_->grad;
}

// Where the backward closures write gradients. Ops take one accumulate flag
// for activation gradients and always add into parameter gradients; these
// helpers hand each op the right buffer and flag.
struct GradAccess {
  static Var::Node& node(const Var& v) { return *v.node_; }

  static bool wants(const Var& v) { return v.requires_grad(); }

  // A parameter's gradient is its view of the store's flat buffer, which a
  // store prepared for inference never allocates: reaching one is a mistake
  // to name, not a gradient to allocate on the side where no optimizer sees it.
  static void check_parameter_buffer(const Var::Node& n) {
    CR_CHECK(!n.is_parameter || n.grad.defined(),
             "backward: a parameter " << n.value.str() << " has no gradient buffer: its ParameterStore has no "
                                      "training state (Adam and ParameterStore::zero_grad allocate it; "
                                      "ParameterStore::ensure_training_state)");
  }

  static Tensor empty_like(const Var& v) {
    const Tensor& t = v.value();
    return Tensor::empty(t.shape(), t.dtype(), t.device());
  }

  // For an op that overwrites (accumulate = false) or adds (true): v's
  // gradient, allocated on the first write, and whether to add. Marks it
  // written, so the caller must write it. For a Var that takes no gradient,
  // a scratch buffer to be overwritten.
  static Tensor activation(const Var& v, bool* accumulate) {
    if (!wants(v)) {
      *accumulate = false;
      return empty_like(v);
    }
    Var::Node& n = node(v);
    check_parameter_buffer(n);
    if (!n.grad.defined()) n.grad = empty_like(v);
    *accumulate = n.grad_written;
    n.grad_written = true;
    return n.grad;
  }

  // For an op that always adds (parameter gradients): v's gradient, zeroed on
  // first use unless it is a parameter (whose flat buffer the optimizer zeroes).
  // For a Var that takes no gradient, zeroed scratch.
  static Tensor accumulating(const Var& v) {
    if (!wants(v)) return Tensor::zeros(v.value().shape(), v.value().dtype(), v.value().device());
    Var::Node& n = node(v);
    check_parameter_buffer(n);
    if (!n.grad_written) {
      n.grad = Tensor::zeros(v.value().shape(), v.value().dtype(), v.value().device());
      n.grad_written = true;
    }
    return n.grad;
  }

  static void seed(const Var& v) {
    Var::Node& n = node(v);
    n.grad = Tensor::full(v.value().shape(), 1.0, v.value().dtype(), v.value().device());
    n.grad_written = true;
  }

  // Frees an intermediate gradient once its node's backward has used it.
  static void release(const Var& v) {
    Var::Node& n = node(v);
    if (n.is_parameter) return;
    n.grad = Tensor();
    n.grad_written = false;
  }
};

namespace {

// Several activation gradients written by one op call that takes a single
// accumulate flag (mul_channel, concat): the op overwrites every buffer, and
// inputs whose gradient already holds a contribution get a scratch buffer
// that finish() adds in.
class SharedFlagGrads {
 public:
  Tensor add(const Var& v) {
    bool accumulate = false;
    Tensor grad = GradAccess::activation(v, &accumulate);
    if (!accumulate) return grad;
    Tensor scratch = GradAccess::empty_like(v);
    pending_.push_back({scratch, grad});
    return scratch;
  }
  void finish() {
    for (auto& [scratch, grad] : pending_) ops::add_into(scratch, grad, /*accumulate=*/true);
  }

 private:
  std::vector<std::pair<Tensor, Tensor>> pending_;
};

thread_local Tape* current_tape = nullptr;

// The tape to record onto: the current one, if any input takes a gradient.
Tape* recording(std::initializer_list<const Var*> inputs) {
  Tape* tape = Tape::current();
  if (!tape) return nullptr;
  for (const Var* v : inputs)
    if (v->requires_grad()) return tape;
  return nullptr;
}

Tensor empty_like(const Tensor& t, const Shape& shape) { return Tensor::empty(shape, t.dtype(), t.device()); }

}  // namespace

// ---------------------------------------------------------------- Tape
Tape::Tape() : previous_(current_tape) { current_tape = this; }
Tape::~Tape() { current_tape = previous_; }
Tape* Tape::current() { return current_tape; }

void Tape::record(const Var& out, std::function<void(const Tensor&)> backward) {
  nodes_.push_back({out, std::move(backward)});
}

void Tape::backward(const Var& loss) {
  CR_CHECK(loss.requires_grad(),
           "Tape::backward: the loss depends on nothing that takes a gradient (was it computed "
           "inside NoGrad, or on another tape?)");
  CR_CHECK(loss.value().numel() == 1,
           "Tape::backward: the loss must have one element, got " << loss.value().str());
  const bool recorded_here = std::any_of(nodes_.begin(), nodes_.end(), [&](const Node& n) {
    return &GradAccess::node(n.out) == &GradAccess::node(loss);
  });
  CR_CHECK(recorded_here, "Tape::backward: the loss was not recorded on this tape (did backward "
                          "already run, or was the loss computed while another tape was current?)");
  GradAccess::seed(loss);
  for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it) {
    if (it->out.has_grad()) it->backward(it->out.grad());
    GradAccess::release(it->out);
    // Drop the closure now: it holds the saved activations of its op.
    it->backward = nullptr;
  }
  nodes_.clear();
}

NoGrad::NoGrad() : saved_(current_tape) { current_tape = nullptr; }
NoGrad::~NoGrad() { current_tape = saved_; }

// ---------------------------------------------------------------- ops
Var conv2d(const Var& x, const Var& w, const Var& b, const ConvParams& p) {
  const Tensor& xv = x.value();
  Tensor y = empty_like(xv, conv2d_out_shape(xv.shape(), w.value().shape(), p));
  Tape* tape = recording({&x, &w, &b});
  CR_CHECK(!p.relu || !tape, "conv2d: a convolution with its ReLU fused (ConvParams::relu) has no backward; "
                             "use it without a tape (NoGrad, the inference form)");
  CR_CHECK(!p.inference || !tape, "conv2d: a convolution computed for inference (ConvParams::inference) has no "
                                  "backward; use it without a tape (NoGrad, the inference form)");
  // Without a tape no gradient will flow back through y: the forward may use
  // inference arithmetic (ConvParams::inference).
  ConvParams forward = p;
  if (!tape) forward.inference = true;
  ops::conv2d_forward(xv, w.value(), b.defined() ? &b.value() : nullptr, forward, y);
  Var out(y, tape != nullptr);
  if (tape) {
    tape->record(out, [x, w, b, p](const Tensor& dy) {
      if (x.requires_grad()) {
        bool accumulate = false;
        Tensor dx = GradAccess::activation(x, &accumulate);
        ops::conv2d_backward_data(dy, w.value(), p, dx, accumulate);
      }
      if (w.requires_grad() || b.requires_grad()) {
        Tensor dw = GradAccess::accumulating(w);
        Tensor db = b.defined() ? GradAccess::accumulating(b) : Tensor();
        ops::conv2d_backward_filter(dy, x.value(), p, dw, b.defined() ? &db : nullptr);
      }
    });
  }
  return out;
}

Var batchnorm(const Var& x, const Var& gamma, const Var& beta, Tensor& running_mean,
              Tensor& running_var, const BatchNormParams& p, bool training) {
  const Tensor& xv = x.value();
  Tensor y = empty_like(xv, xv.shape());
  Tape* tape = recording({&x, &gamma, &beta});
  if (!training) {
    CR_CHECK(!tape, "batchnorm: evaluation mode (running statistics) has no backward; run it "
                    "inside a NoGrad scope, or in training mode");
    ops::batchnorm_forward_infer(xv, gamma.value(), beta.value(), running_mean, running_var, p, y);
    return Var(y);
  }
  Tensor save_mean = empty_like(xv, Shape{xv.c()});
  Tensor save_invstd = empty_like(xv, Shape{xv.c()});
  ops::batchnorm_forward_train(xv, gamma.value(), beta.value(), p, running_mean, running_var, y,
                               save_mean, save_invstd);
  Var out(y, tape != nullptr);
  if (tape) {
    tape->record(out, [x, gamma, beta, save_mean, save_invstd](const Tensor& dy) {
      bool accumulate = false;
      Tensor dx = GradAccess::activation(x, &accumulate);
      Tensor dgamma = GradAccess::accumulating(gamma);
      Tensor dbeta = GradAccess::accumulating(beta);
      ops::batchnorm_backward(dy, x.value(), gamma.value(), save_mean, save_invstd, dx, dgamma,
                              dbeta, accumulate);
    });
  }
  return out;
}

namespace {
// An activation whose backward needs only its output y (relu, sigmoid).
template <class Forward, class Backward>
Var activation_from_output(const Var& x, Forward forward, Backward backward) {
  Tensor y = empty_like(x.value(), x.value().shape());
  forward(x.value(), y);
  Tape* tape = recording({&x});
  Var out(y, tape != nullptr);
  if (tape) {
    tape->record(out, [x, y, backward](const Tensor& dy) {
      bool accumulate = false;
      Tensor dx = GradAccess::activation(x, &accumulate);
      backward(dy, y, dx, accumulate);
    });
  }
  return out;
}
}  // namespace

Var relu(const Var& x) { return activation_from_output(x, ops::relu_forward, ops::relu_backward); }

Var sigmoid(const Var& x) { return activation_from_output(x, ops::sigmoid_forward, ops::sigmoid_backward); }

Var add(const Var& a, const Var& b) {
  Tensor y = empty_like(a.value(), a.value().shape());
  ops::add_forward(a.value(), b.value(), y);
  Tape* tape = recording({&a, &b});
  Var out(y, tape != nullptr);
  if (tape) {
    tape->record(out, [a, b](const Tensor& dy) {
      // a + a is legal: the second write then accumulates onto the first.
      for (const Var* v : {&a, &b}) {
        if (!v->requires_grad()) continue;
        bool accumulate = false;
        Tensor dv = GradAccess::activation(*v, &accumulate);
        ops::add_into(dy, dv, accumulate);
      }
    });
  }
  return out;
}

Var mul_channel(const Var& x, const Var& s) {
  Tensor y = empty_like(x.value(), x.value().shape());
  ops::mul_channel_forward(x.value(), s.value(), y);
  Tape* tape = recording({&x, &s});
  Var out(y, tape != nullptr);
  if (tape) {
    tape->record(out, [x, s](const Tensor& dy) {
      SharedFlagGrads grads;
      Tensor dx = grads.add(x);
      Tensor ds = grads.add(s);
      ops::mul_channel_backward(dy, x.value(), s.value(), dx, ds, /*accumulate=*/false);
      grads.finish();
    });
  }
  return out;
}

Var mul_pixel(const Var& x, const Var& a) {
  Tensor y = empty_like(x.value(), x.value().shape());
  ops::mul_pixel_forward(x.value(), a.value(), y);
  Tape* tape = recording({&x, &a});
  Var out(y, tape != nullptr);
  if (tape) {
    tape->record(out, [x, a](const Tensor& dy) {
      SharedFlagGrads grads;
      Tensor dx = grads.add(x);
      Tensor da = grads.add(a);
      ops::mul_pixel_backward(dy, x.value(), a.value(), dx, da, /*accumulate=*/false);
      grads.finish();
    });
  }
  return out;
}

Var concat(const std::vector<Var>& parts) {
  CR_CHECK(!parts.empty(), "concat: no inputs");
  std::vector<Tensor> values;
  int64_t channels = 0;
  bool any_grad = false;
  for (const Var& v : parts) {
    values.push_back(v.value());
    channels += v.value().c();
    any_grad = any_grad || v.requires_grad();
  }
  const Tensor& first = values.front();
  Tensor y = empty_like(first, Shape{first.n(), channels, first.h(), first.w()});
  ops::concat_channels_forward(values, y);
  Tape* tape = any_grad ? Tape::current() : nullptr;
  Var out(y, tape != nullptr);
  if (tape) {
    tape->record(out, [parts](const Tensor& dy) {
      SharedFlagGrads grads;
      std::vector<Tensor> dxs;
      for (const Var& v : parts) dxs.push_back(grads.add(v));
      ops::concat_channels_backward(dy, dxs, /*accumulate=*/false);
      grads.finish();
    });
  }
  return out;
}

Var upsample2x(const Var& x) {
  const Tensor& xv = x.value();
  Tensor y = empty_like(xv, Shape{xv.n(), xv.c(), 2 * xv.h(), 2 * xv.w()});
  ops::upsample2x_forward(xv, y);
  Tape* tape = recording({&x});
  Var out(y, tape != nullptr);
  if (tape) {
    tape->record(out, [x](const Tensor& dy) {
      bool accumulate = false;
      Tensor dx = GradAccess::activation(x, &accumulate);
      ops::upsample2x_backward(dy, dx, accumulate);
    });
  }
  return out;
}

Var interleave_phases(const Var& z, const Var& bias, bool relu) {
  const Tensor& zv = z.value();
  CR_CHECK(zv.shape().rank() == 4, "interleave_phases: phases must be 4-D NCHW, got " << zv.shape().str());
  CR_CHECK(!recording({&z, &bias}), "interleave_phases: the inference form's op has no backward; run it "
                                    "inside a NoGrad scope");
  Tensor y = empty_like(zv, Shape{zv.n(), zv.c() / 4, 2 * (zv.h() - 1), 2 * (zv.w() - 1)});
  ops::interleave_phases_forward(zv, bias.defined() ? &bias.value() : nullptr, relu, y);
  return Var(y);
}

Var maxpool2x2(const Var& x) {
  const Tensor& xv = x.value();
  CR_CHECK(xv.shape().rank() == 4, "maxpool2x2: input must be 4-D NCHW, got " << xv.shape().str());
  Tensor y = empty_like(xv, Shape{xv.n(), xv.c(), xv.h() / 2, xv.w() / 2});
  ops::maxpool2x2_forward(xv, y);
  Tape* tape = recording({&x});
  Var out(y, tape != nullptr);
  if (tape) {
    tape->record(out, [x](const Tensor& dy) {
      bool accumulate = false;
      Tensor dx = GradAccess::activation(x, &accumulate);
      ops::maxpool2x2_backward(dy, x.value(), dx, accumulate);
    });
  }
  return out;
}

Var global_avg_pool(const Var& x) {
  const Tensor& xv = x.value();
  Tensor y = empty_like(xv, Shape{xv.n(), xv.c()});
  ops::global_avg_pool_forward(xv, y);
  Tape* tape = recording({&x});
  Var out(y, tape != nullptr);
  if (tape) {
    tape->record(out, [x](const Tensor& dy) {
      bool accumulate = false;
      Tensor dx = GradAccess::activation(x, &accumulate);
      ops::global_avg_pool_backward(dy, dx, accumulate);
    });
  }
  return out;
}

Var linear(const Var& x, const Var& w) {
  const Tensor& xv = x.value();
  Tensor y = empty_like(xv, Shape{xv.n(), w.value().n()});
  ops::linear_forward(xv, w.value(), y);
  Tape* tape = recording({&x, &w});
  Var out(y, tape != nullptr);
  if (tape) {
    tape->record(out, [x, w](const Tensor& dy) {
      if (x.requires_grad()) {
        bool accumulate = false;
        Tensor dx = GradAccess::activation(x, &accumulate);
        ops::linear_backward_data(dy, w.value(), dx, accumulate);
      }
      if (w.requires_grad()) {
        Tensor dw = GradAccess::accumulating(w);
        ops::linear_backward_weight(dy, x.value(), dw);
      }
    });
  }
  return out;
}

Var se(const Var& x, const Var& w1, const Var& w2) {
  const Tensor& xv = x.value();
  Tensor y = empty_like(xv, xv.shape());
  SeSaved saved{empty_like(xv, Shape{xv.n(), xv.c()}), empty_like(xv, Shape{xv.n(), w1.value().n()}),
                empty_like(xv, Shape{xv.n(), xv.c()})};
  ops::se_forward(xv, w1.value(), w2.value(), y, saved);
  Tape* tape = recording({&x, &w1, &w2});
  Var out(y, tape != nullptr);
  if (tape) {
    tape->record(out, [x, w1, w2, saved](const Tensor& dy) {
      bool accumulate = false;
      Tensor dx = GradAccess::activation(x, &accumulate);
      Tensor dw1 = GradAccess::accumulating(w1);
      Tensor dw2 = GradAccess::accumulating(w2);
      ops::se_backward(dy, x.value(), w1.value(), w2.value(), saved, dx, dw1, dw2, accumulate);
    });
  }
  return out;
}

Var hybrid_loss(const Var& p, const Tensor& target, const HybridLossParams& params, LossSums* sums) {
  const LossSums s = ops::hybrid_loss_forward(p.value(), target, params);
  if (sums) *sums = s;
  Tensor value = Tensor::full(Shape{1}, s.loss, p.value().dtype(), p.value().device());
  Tape* tape = recording({&p});
  Var out(value, tape != nullptr);
  if (tape) {
    tape->record(out, [p, target, params, s](const Tensor& dloss) {
      // One scalar back to the host; the forward already synchronized for the sums.
      const double scale = dloss.to_vector_f64()[0];
      bool accumulate = false;
      Tensor dp = GradAccess::activation(p, &accumulate);
      ops::hybrid_loss_backward(p.value(), target, params, s, scale, dp, accumulate);
    });
  }
  return out;
}

}  // namespace covidrate::ag
