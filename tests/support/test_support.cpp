#include "tests/support/test_support.h"

#include <cmath>
#include <cstdlib>

namespace covidrate::test {

std::string data_dir() {
  const char* env = std::getenv("COVIDRATE_DATA");
  if (env && *env) return env;
  return source_dir() + "/../shared/data";
}

std::string source_dir() {
  const char* env = std::getenv("COVIDRATE_SOURCE");
  if (env && *env) return env;
  return COVIDRATE_SOURCE_DIR;
}

namespace {
template <class Gen>
Tensor make(const Shape& shape, DType dtype, Gen gen) {
  std::vector<double> v(static_cast<size_t>(shape.numel()));
  for (auto& x : v) x = gen();
  return Tensor::from_vector(shape, v, dtype);
}
}  // namespace

Tensor randn(const Shape& shape, uint64_t seed, DType dtype, double scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0.0, scale);
  return make(shape, dtype, [&] { return d(rng); });
}
Tensor uniform(const Shape& shape, uint64_t seed, double lo, double hi, DType dtype) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  return make(shape, dtype, [&] { return d(rng); });
}
Tensor bernoulli(const Shape& shape, uint64_t seed, double p, DType dtype) {
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution d(p);
  return make(shape, dtype, [&] { return d(rng) ? 1.0 : 0.0; });
}

double closeness(const Tensor& a, const Tensor& b, double rtol, double atol) {
  CR_CHECK(a.numel() == b.numel(), "closeness: " << a.str() << " vs " << b.str());
  const std::vector<double> x = a.to_vector_f64(), y = b.to_vector_f64();
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i]) && std::isfinite(y[i])) return INFINITY;
    const double r = std::abs(x[i] - y[i]) / (atol + rtol * std::abs(y[i]));
    if (r > worst) worst = r;
  }
  return worst;
}

double rel_l2(const Tensor& a, const Tensor& b) {
  CR_CHECK(a.numel() == b.numel(), "rel_l2: " << a.str() << " vs " << b.str());
  const std::vector<double> x = a.to_vector_f64(), y = b.to_vector_f64();
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (x[i] - y[i]) * (x[i] - y[i]);
    den += y[i] * y[i];
  }
  if (!std::isfinite(num)) return INFINITY;
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

int64_t count_nonfinite(const Tensor& t) {
  int64_t bad = 0;
  for (double v : t.to_vector_f64()) bad += !std::isfinite(v);
  return bad;
}

double central_difference(Tensor t, int64_t i, double h, const std::function<double()>& loss) {
  CR_CHECK(t.dtype() == DType::F64 && !t.is_cuda() && i >= 0 && i < t.numel(),
           "central_difference: element " << i << " of " << t.str() << " (float64 on the CPU expected)");
  double* v = t.data<double>();
  const double saved = v[i];
  v[i] = saved + h;
  const double plus = loss();
  v[i] = saved - h;
  const double minus = loss();
  v[i] = saved;
  return (plus - minus) / (2 * h);
}

}  // namespace covidrate::test
