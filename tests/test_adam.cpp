// Adam over the flat buffers against the Keras 2 formula computed by hand in
// double, with learning-rate decay and an L2 penalty; resuming from a save.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <unistd.h>

#include "nn/adam.h"
#include "tests/support/test_support.h"

using namespace covidrate;

namespace {

constexpr double kL2 = 0.01;

struct Model {
  ParameterStore store{DType::F64};
  ag::Var a, b, frozen;
  Model() {
    a = store.add_parameter("a", Tensor::from_vector(Shape{3}, std::vector<double>{0.5, -1.0, 2.0}), kL2);
    b = store.add_parameter("b", Tensor::from_vector(Shape{2, 2}, std::vector<double>{0.1, 0.2, -0.3, 0.0}));
    frozen = store.add_parameter("frozen", Tensor::from_vector(Shape{2}, std::vector<double>{7.0, 8.0}), kL2,
                                 /*trainable=*/false);
    store.allocate(Device::CPU);
  }
};

// The gradient the loss would give at step t (before the L2 term).
double loss_grad(int t, size_t i) { return std::sin(1.0 + t * 0.7 + i * 1.3); }

// Sets the loss gradients of a and b for step t (frozen gets none).
void set_grads(Model& m, int t) {
  for (const ag::Var* v : {&m.a, &m.b}) {
    Tensor g = v->grad();
    for (int64_t i = 0; i < g.numel(); ++i) g.data<double>()[i] = loss_grad(t, static_cast<size_t>(i));
  }
}

// One parameter's Adam state, by hand.
struct Reference {
  std::vector<double> w, m, v;
  double l2;
  void step(const AdamParams& p, int t) {
    const double lr_t = p.lr / (1.0 + p.decay * (t - 1)) * std::sqrt(1.0 - std::pow(p.beta2, t)) /
                        (1.0 - std::pow(p.beta1, t));
    for (size_t i = 0; i < w.size(); ++i) {
      const double g = loss_grad(t, i) + 2.0 * l2 * w[i];
      m[i] = p.beta1 * m[i] + (1 - p.beta1) * g;
      v[i] = p.beta2 * v[i] + (1 - p.beta2) * g * g;
      w[i] -= lr_t * m[i] / (std::sqrt(v[i]) + p.eps);
    }
  }
};

AdamParams params() {
  AdamParams p;
  p.lr = 0.05;
  p.decay = 0.1;
  return p;
}

}  // namespace

TEST_CASE("Adam follows the formula with decay and L2 for several steps") {
  Model model;
  Adam adam(model.store, params());
  Reference ra{model.a.value().to_vector_f64(), std::vector<double>(3), std::vector<double>(3), kL2};
  Reference rb{model.b.value().to_vector_f64(), std::vector<double>(4), std::vector<double>(4), 0.0};
  for (int t = 1; t <= 4; ++t) {
    CAPTURE(t);
    const AdamParams p = params();
    CHECK(adam.current_lr() == doctest::Approx(p.lr / (1 + p.decay * (t - 1)) *
                                               std::sqrt(1 - std::pow(p.beta2, t)) / (1 - std::pow(p.beta1, t))));
    adam.zero_grad();
    set_grads(model, t);
    adam.step();
    ra.step(params(), t);
    rb.step(params(), t);
    CHECK(adam.steps() == t);
    const auto wa = model.a.value().to_vector_f64(), wb = model.b.value().to_vector_f64();
    for (size_t i = 0; i < wa.size(); ++i) CHECK(wa[i] == doctest::Approx(ra.w[i]).epsilon(1e-12));
    for (size_t i = 0; i < wb.size(); ++i) CHECK(wb[i] == doctest::Approx(rb.w[i]).epsilon(1e-12));
  }
  // A frozen parameter never moves, even with an L2 coefficient.
  CHECK(model.frozen.value().to_vector_f64() == std::vector<double>{7.0, 8.0});
  // The padding between parameters stays zero.
  const auto flat = model.store.flat_values().to_vector_f64();
  CHECK(flat[3] == 0.0);
  CHECK(adam.l2_penalty() == doctest::Approx(kL2 * (ra.w[0] * ra.w[0] + ra.w[1] * ra.w[1] + ra.w[2] * ra.w[2] +
                                                    7.0 * 7.0 + 8.0 * 8.0)));
}

TEST_CASE("saved optimizer state resumes the same trajectory") {
  const auto dir = std::filesystem::temp_directory_path();
  const std::string weights = (dir / ("covidrate_adam_w_" + std::to_string(::getpid()))).string();
  const std::string state = (dir / ("covidrate_adam_s_" + std::to_string(::getpid()))).string();

  Model first;
  Adam adam(first.store, params());
  for (int t = 1; t <= 2; ++t) {
    adam.zero_grad();
    set_grads(first, t);
    adam.step();
  }
  first.store.save(weights);
  adam.save(state);
  adam.zero_grad();
  set_grads(first, 3);
  adam.step();

  Model resumed;
  Adam adam2(resumed.store, params());
  resumed.store.load(weights);
  adam2.load(state);
  CHECK(adam2.steps() == 2);
  adam2.zero_grad();
  set_grads(resumed, 3);
  adam2.step();
  CHECK(resumed.store.flat_values().to_vector_f64() == first.store.flat_values().to_vector_f64());

  // A state file from another model is refused, naming what is missing.
  CHECK_THROWS_WITH_AS(adam2.load(weights), doctest::Contains("no 'step'"), Error);
  ParameterStore other(DType::F64);
  other.add_parameter("z", Tensor::zeros(Shape{1}, DType::F64));
  other.allocate(Device::CPU);
  Adam adam3(other, params());
  CHECK_THROWS_WITH_AS(adam3.load(state), doctest::Contains("missing 'm.z'"), Error);

  std::filesystem::remove(weights);
  std::filesystem::remove(state);
}
