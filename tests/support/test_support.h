// Helpers shared by the tests: seeded random tensors, comparisons, paths to the
// real data, and the "skip" exit code for tests that need a GPU.
#pragma once
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "nn/tensor.h"

namespace covidrate::test {

// ctest reports a test binary that exits with this code as skipped.
constexpr int kSkipExitCode = 77;

// Folder with the real CT data (COVIDRATE_DATA, else ../shared/data beside the source tree).
std::string data_dir();
// Root of the source tree (COVIDRATE_SOURCE, else the compile-time source dir).
std::string source_dir();

// Deterministic random tensors on the CPU.
Tensor randn(const Shape& shape, uint64_t seed, DType dtype = DType::F32, double scale = 1.0);
Tensor uniform(const Shape& shape, uint64_t seed, double lo, double hi, DType dtype = DType::F32);
Tensor bernoulli(const Shape& shape, uint64_t seed, double p, DType dtype = DType::F32);

// max |a - b| / (atol + rtol*|b|) over all elements; <= 1 means "close".
// Any NaN or Inf in a where b is finite gives +inf.
double closeness(const Tensor& a, const Tensor& b, double rtol, double atol);
// Relative L2 error ||a - b|| / ||b||.
double rel_l2(const Tensor& a, const Tensor& b);
// Count of non-finite values.
int64_t count_nonfinite(const Tensor& t);

// d loss() / d t[i] by central differences with step h: element i of `t`
// (float64, on the CPU) is moved in place to each side and restored.
double central_difference(Tensor t, int64_t i, double h, const std::function<double()>& loss);

}  // namespace covidrate::test
