// The tape against finite differences, in float64 on the CPU: a small network
// composed like a COVID-Rate block, values used twice, every tape op, NoGrad.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>

#include "nn/layers.h"
#include "tests/support/test_support.h"

using namespace covidrate;
using ag::Var;

namespace {

constexpr double kEps = 1e-6;

double scalar(const Var& v) { return v.value().to_vector_f64().at(0); }

// Compares grad[i] with the central difference of loss() when values[i] moves,
// for the given indices. values is modified in place and restored.
void check_gradient(const char* what, const std::function<double()>& loss, Tensor values,
                    const Tensor& grad, const std::vector<int64_t>& indices) {
  const std::vector<double> g = grad.to_vector_f64();
  for (int64_t i : indices) {
    const double numeric = test::central_difference(values, i, kEps, loss);
    CAPTURE(what);
    CAPTURE(i);
    CAPTURE(numeric);
    CAPTURE(g[i]);
    CHECK(std::abs(g[i] - numeric) <= 1e-7 + 1e-5 * std::abs(numeric));
  }
}

std::vector<int64_t> all_indices(const Tensor& t) {
  std::vector<int64_t> out(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<int64_t>(i);
  return out;
}

HybridLossParams loss_params() {
  HybridLossParams p;
  p.pos_weight = 2.0;  // every term of the loss in play
  return p;
}

// Checks the gradient of loss(net(x)) with respect to every element of x.
void check_input_gradient(const char* what, const Shape& shape,
                          const std::function<Var(const Var&)>& net) {
  Var x(test::randn(shape, 11, DType::F64), /*requires_grad=*/true);
  const Tensor target = test::bernoulli(Shape{shape.n(), 1, shape.h(), shape.w()}, 12, 0.4, DType::F64);
  auto loss_of = [&] { return ag::hybrid_loss(net(x), target, loss_params()); };
  {
    ag::Tape tape;
    tape.backward(loss_of());
  }
  REQUIRE(x.has_grad());
  check_gradient(what, [&] {
    ag::NoGrad no_grad;
    return scalar(loss_of());
  }, x.value(), x.grad(), all_indices(x.value()));
}

}  // namespace

TEST_CASE("a residual SE block matches finite differences for inputs and parameters") {
  // conv -> BN(train) -> ReLU -> SE -> + residual -> conv -> sigmoid -> hybrid loss
  ParameterStore store(DType::F64, 7);
  Conv2d conv1(store, "block.conv1", 3, 8, 3);
  BatchNorm2d bn(store, "block.bn", 8);
  SqueezeExcite se(store, "block.se", 8, /*ratio=*/4);
  Conv2d head(store, "head", 8, 1, 3, {.stride = 1, .dilation = 2});
  store.allocate(Device::CPU);

  Var x(test::randn(Shape{2, 3, 8, 8}, 1, DType::F64), /*requires_grad=*/true);
  const Tensor target = test::bernoulli(Shape{2, 1, 8, 8}, 2, 0.3, DType::F64);
  auto forward = [&] {
    Var h = ag::relu(bn.forward(conv1.forward(x)));
    Var r = ag::add(se.forward(h), h);  // h is used twice
    return ag::hybrid_loss(ag::sigmoid(head.forward(r)), target, loss_params());
  };

  store.zero_grad();
  ag::Tape tape;
  Var loss = forward();
  CHECK(tape.size() == 8);
  tape.backward(loss);
  CHECK(tape.size() == 0);

  auto loss_value = [&] {
    ag::NoGrad no_grad;
    return scalar(forward());
  };
  check_gradient("input", loss_value, x.value(), x.grad(), all_indices(x.value()));

  // A sample of every parameter, through the flat buffers.
  const Tensor values = store.flat_values();
  const Tensor grads = store.flat_grads();
  for (const auto& p : store.parameters()) {
    std::vector<int64_t> sample;
    const int64_t n = p.var.value().numel();
    for (int64_t i = 0; i < n; i += std::max<int64_t>(1, n / 7)) sample.push_back(p.offset + i);
    check_gradient(p.name.c_str(), loss_value, values, grads, sample);
  }
}

TEST_CASE("a value used twice receives both contributions") {
  SUBCASE("x + x") {
    check_input_gradient("x + x", Shape{1, 1, 4, 4}, [](const Var& x) { return ag::sigmoid(ag::add(x, x)); });
  }
  SUBCASE("two branches") {
    check_input_gradient("relu(x) + sigmoid(x)", Shape{2, 1, 4, 4}, [](const Var& x) {
      return ag::sigmoid(ag::add(ag::relu(x), ag::sigmoid(x)));
    });
  }
  SUBCASE("accumulation is exactly additive") {
    // d/dx sigmoid(x + x) through the tape equals twice d/dy sigmoid(y) at y = 2x.
    Var x(test::randn(Shape{1, 1, 2, 2}, 3, DType::F64), true);
    const Tensor target = test::bernoulli(Shape{1, 1, 2, 2}, 4, 0.5, DType::F64);
    {
      ag::Tape tape;
      tape.backward(ag::hybrid_loss(ag::sigmoid(ag::add(x, x)), target, {}));
    }
    Tensor doubled = x.value().clone();
    ops::axpy(1.0, x.value(), doubled);
    Var y(doubled, true);
    {
      ag::Tape tape;
      tape.backward(ag::hybrid_loss(ag::sigmoid(y), target, {}));
    }
    const std::vector<double> gx = x.grad().to_vector_f64(), gy = y.grad().to_vector_f64();
    for (size_t i = 0; i < gx.size(); ++i) CHECK(gx[i] == doctest::Approx(2 * gy[i]).epsilon(1e-12));
  }
}

TEST_CASE("every tape op matches finite differences") {
  ParameterStore store(DType::F64, 5);
  Linear fc(store, "fc", 4, 4);
  Conv2d mix(store, "mix", 8, 1, 1);
  store.allocate(Device::CPU);
  store.ensure_training_state();

  // Pooling, upsampling and concatenation, with x reused by three consumers.
  check_input_gradient("pool/upsample/concat", Shape{2, 4, 4, 4}, [&](const Var& x) {
    Var coarse = ag::upsample2x(ag::maxpool2x2(x));
    return ag::sigmoid(mix.forward(ag::concat({coarse, x})));
  });
  // Channel attention built from the separate ops: x feeds mul_channel, the
  // pooled branch and a residual, so mul_channel's single accumulate flag
  // meets an x that already holds a gradient.
  check_input_gradient("gap/linear/mul_channel", Shape{2, 4, 4, 4}, [&](const Var& x) {
    Var s = ag::sigmoid(fc.forward(ag::global_avg_pool(x)));
    Var y = ag::add(x, ag::mul_channel(x, s));
    return ag::sigmoid(mix.forward(ag::concat({y, x})));
  });
}

TEST_CASE("NoGrad records nothing") {
  Var x(test::randn(Shape{1, 2, 4, 4}, 9, DType::F64), /*requires_grad=*/true);
  SUBCASE("inside a tape") {
    ag::Tape tape;
    {
      ag::NoGrad no_grad;
      Var y = ag::relu(ag::sigmoid(x));
      CHECK(tape.size() == 0);
      CHECK_FALSE(y.requires_grad());
    }
    Var y = ag::relu(x);
    CHECK(tape.size() == 1);
    CHECK(y.requires_grad());
  }
  SUBCASE("without a tape") {
    CHECK(ag::Tape::current() == nullptr);
    CHECK_FALSE(ag::relu(x).requires_grad());
  }
  SUBCASE("inputs without gradients are not recorded") {
    ag::Tape tape;
    Var constant(test::randn(Shape{1, 2, 4, 4}, 10, DType::F64));
    CHECK_FALSE(ag::relu(constant).requires_grad());
    CHECK(tape.size() == 0);
  }
}

TEST_CASE("misuse is reported") {
  ParameterStore store(DType::F64);
  BatchNorm2d bn(store, "bn", 2);
  store.allocate(Device::CPU);
  bn.set_training(false);
  Var x(test::randn(Shape{1, 2, 2, 2}, 1, DType::F64), true);
  ag::Tape tape;
  CHECK_THROWS_WITH_AS(bn.forward(x), doctest::Contains("NoGrad"), Error);
  {
    ag::NoGrad no_grad;
    CHECK_NOTHROW(bn.forward(x));
  }
  Var constant(test::randn(Shape{1}, 2, DType::F64));
  CHECK_THROWS_WITH_AS(tape.backward(constant), doctest::Contains("nothing that takes a gradient"), Error);
  CHECK_THROWS_WITH_AS(tape.backward(ag::relu(x)), doctest::Contains("one element"), Error);
  const Tensor target = Tensor::zeros(Shape{1, 2, 2, 2}, DType::F64);
  Var loss = ag::hybrid_loss(ag::sigmoid(x), target, {});
  tape.backward(loss);
  CHECK_THROWS_WITH_AS(tape.backward(loss), doctest::Contains("already run"), Error);
}
