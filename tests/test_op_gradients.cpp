// Finite-difference gradient checks and the overwrite/accumulate contract for
// every case of the op table (tests/support/op_cases.cpp), in float64 on the CPU.
//
// For a case with outputs y_k and random upstream gradients dy_k, the scalar
//   L = sum_k sum(dy_k * y_k)
// has dL/d(input) equal to what the backward writes; central differences of L
// on the inputs check it.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "tests/support/op_cases.h"
#include "tests/support/test_support.h"

using namespace covidrate;
using namespace covidrate::test;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int64_t kAllElementsUpTo = 64;  // beyond this, check a random subset
constexpr int64_t kSubsetSize = 40;

// Unwritten outputs show as NaN.
const Alloc kNanAlloc{[](const Shape& s, DType t, Device d) {
  return Tensor::full(s, kNaN, t, d);
}};

// Normal values keep at least kAwayFromZero from 0, so no ReLU input sits on
// the kink where central differences straddle it.
constexpr double kAwayFromZero = 0.05;

Tensor away_from_zero(Tensor t) {
  double* v = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) v[i] += std::copysign(kAwayFromZero, v[i]);
  return t;
}

Tensor make_input(const OpInput& in, uint64_t seed) {
  switch (in.gen) {
    case Gen::Normal:
      return away_from_zero(randn(in.shape, seed, DType::F64));
    case Gen::Positive:
      return uniform(in.shape, seed, 0.5, 2.0, DType::F64);
    case Gen::Probability:
      return uniform(in.shape, seed, 0.05, 0.95, DType::F64);
    case Gen::Binary:
      return bernoulli(in.shape, seed, 0.5, DType::F64);
  }
  return {};
}

bool differentiable(const OpCase& c, size_t output) {
  return c.output_differentiable.empty() || c.output_differentiable[output];
}

double objective(const OpCase& c, const std::vector<Tensor>& in, const std::vector<Tensor>& dys) {
  const std::vector<Tensor> out = c.forward(in, kNanAlloc);
  double sum = 0;
  for (size_t k = 0; k < out.size(); ++k) {
    if (!differentiable(c, k)) continue;
    const double* y = out[k].data<double>();
    const double* g = dys[k].data<double>();
    for (int64_t i = 0; i < out[k].numel(); ++i) sum += y[i] * g[i];
  }
  return sum;
}

// Gradient buffers for the non-Constant inputs: activations get `activation_fill`,
// parameters `parameter_fill`.
std::vector<Tensor> make_grads(const OpCase& c, const std::vector<Tensor>& in,
                               double activation_fill, double parameter_fill) {
  std::vector<Tensor> grads(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const Role role = c.inputs[i].role;
    if (role == Role::Constant) continue;
    grads[i] = Tensor::full(
        in[i].shape(), role == Role::Activation ? activation_fill : parameter_fill, DType::F64);
  }
  return grads;
}

Tensor plus(const Tensor& t, double value) {
  Tensor r = t.clone();
  double* p = r.data<double>();
  for (int64_t i = 0; i < r.numel(); ++i) p[i] += value;
  return r;
}

void check_finite(const std::vector<Tensor>& ts, const char* what) {
  for (size_t i = 0; i < ts.size(); ++i) {
    if (!ts[i].defined()) continue;
    INFO(what << " " << i << " " << ts[i].str());
    CHECK(count_nonfinite(ts[i]) == 0);
  }
}

// Central differences on input j, compared with the analytic gradient.
void check_input_gradient(const OpCase& c, std::vector<Tensor>& in, const std::vector<Tensor>& dys,
                          size_t j, const Tensor& analytic, uint64_t seed) {
  const int64_t n = in[j].numel();
  std::vector<int64_t> indices(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) indices[static_cast<size_t>(k)] = k;
  if (n > kAllElementsUpTo) {
    std::mt19937_64 rng(seed);
    std::shuffle(indices.begin(), indices.end(), rng);
    indices.resize(kSubsetSize);
  }
  const double* a = analytic.data<double>();
  // Errors are measured against the gradient's own scale, so entries that are
  // legitimately ~0 do not demand a relative accuracy finite differences lack.
  // The scale never drops below what rounding in L leaves in a difference
  // quotient (~1e-15 |L| / eps): a gradient that is exactly 0 (a conv bias
  // before batch norm) is compared with that noise, not with 0.
  double scale = 0;
  for (int64_t k = 0; k < n; ++k) scale = std::max(scale, std::abs(a[k]));
  const double rounding = 1e-15 * (std::abs(objective(c, in, dys)) + 1.0) / c.grad_eps;
  scale = std::max(scale, rounding / c.grad_rtol);
  double* x = in[j].data<double>();
  double worst = 0;
  int64_t worst_index = -1;
  double worst_numeric = 0;
  for (int64_t k : indices) {
    const double saved = x[k];
    x[k] = saved + c.grad_eps;
    const double up = objective(c, in, dys);
    x[k] = saved - c.grad_eps;
    const double down = objective(c, in, dys);
    x[k] = saved;
    const double numeric = (up - down) / (2 * c.grad_eps);
    const double err = std::abs(a[k] - numeric) / (std::abs(numeric) + scale);
    if (!(err <= worst)) {  // also catches NaN
      worst = err;
      worst_index = k;
      worst_numeric = numeric;
    }
  }
  INFO("input " << j << " " << in[j].shape().str() << ": worst element " << worst_index
                << " analytic " << (worst_index >= 0 ? a[worst_index] : 0.0) << " numeric "
                << worst_numeric << ", gradient scale " << scale);
  CHECK(worst <= c.grad_rtol);
}

void check_case(const OpCase& c, uint64_t seed) {
  std::vector<Tensor> in;
  for (size_t i = 0; i < c.inputs.size(); ++i)
    in.push_back(make_input(c.inputs[i], seed + 101 * i));
  const std::vector<Tensor> out = c.forward(in, kNanAlloc);
  check_finite(out, "output");
  if (!c.backward) return;

  std::vector<Tensor> dys(out.size());
  for (size_t k = 0; k < out.size(); ++k)
    if (differentiable(c, k)) dys[k] = randn(out[k].shape(), seed + 7 + k, DType::F64);

  // The reference: overwrite into zeroed buffers.
  std::vector<Tensor> grads = make_grads(c, in, 0.0, 0.0);
  c.backward(in, out, dys, grads, false, kNanAlloc);
  check_finite(grads, "gradient of input");
  for (size_t j = 0; j < in.size(); ++j)
    if (grads[j].defined()) check_input_gradient(c, in, dys, j, grads[j], seed + 13 + j);

  // The contract. Sums of the same terms in another order differ by rounding only.
  const double tol = 1e-12;
  std::vector<Tensor> overwrite = make_grads(c, in, kNaN, 9.0);
  c.backward(in, out, dys, overwrite, false, kNanAlloc);
  std::vector<Tensor> accumulate = make_grads(c, in, 9.0, 9.0);
  c.backward(in, out, dys, accumulate, true, kNanAlloc);
  for (size_t j = 0; j < in.size(); ++j) {
    if (!grads[j].defined()) continue;
    const Tensor plus9 = plus(grads[j], 9.0);
    if (c.inputs[j].role == Role::Activation) {
      INFO("activation gradient " << j << ", accumulate=false over NaN must overwrite");
      CHECK(closeness(overwrite[j], grads[j], tol, tol) <= 1.0);
    } else {
      INFO("parameter gradient " << j << ", accumulate=false must still accumulate onto 9");
      CHECK(closeness(overwrite[j], plus9, tol, tol) <= 1.0);
    }
    INFO("gradient " << j << ", accumulate=true onto 9");
    CHECK(closeness(accumulate[j], plus9, tol, tol) <= 1.0);
  }
}

}  // namespace

TEST_CASE("op gradients and the overwrite/accumulate contract, float64 CPU") {
  const std::vector<OpCase>& cases = op_cases();
  REQUIRE(!cases.empty());
  for (size_t i = 0; i < cases.size(); ++i) {
    SUBCASE(cases[i].name.c_str()) { check_case(cases[i], 1000 + 37 * i); }
  }
}
