// Small helpers shared by the CPU twins: the dtype switch at each entry point,
// the overwrite/accumulate store of activation gradients, and the grain of
// elementwise loops spread over threads.
#pragma once
#include <algorithm>

#include "nn/tensor.h"

namespace covidrate::cpu {

// Runs fn.template operator()<T>() with T = double for F64 tensors, float otherwise
// (ops::* has already rejected every other dtype).
template <class Fn> void with_dtype(const Tensor& t, Fn&& fn) {
  if (t.dtype() == DType::F64) {
    fn.template operator()<double>();
  } else {
    fn.template operator()<float>();
  }
}

// The activation-gradient contract: overwrite, or add to what is there. Overwrite
// never reads dst, so a NaN-poisoned buffer stays harmless.
template <class T> inline void store_grad(T& dst, T value, bool accumulate) {
  dst = accumulate ? dst + value : value;
}

// store_grad over dst[begin, end) with value(i): the flag is tested once, outside
// the loops, so that each of them vectorizes (a test per element kept GCC from it).
template <class T, class Value>
inline void store_grads(T* dst, int64_t begin, int64_t end, bool accumulate, Value value) {
  if (accumulate) {
    for (int64_t i = begin; i < end; ++i) dst[i] += value(i);
  } else {
    for (int64_t i = begin; i < end; ++i) dst[i] = value(i);
  }
}

// The sum of term(i) (a double) over [0, n): the plane and channel sums of
// pooling, SE, batch norm and bias gradients, up to millions of values, so in
// double also for float data. Four interleaved partial sums: a single running
// sum waits for each add to finish, four keep the adder busy (the plane sums
// ran at a quarter of the memory's speed).
template <class Term> double sum_in_double(int64_t n, Term term) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += term(i);
    s1 += term(i + 1);
    s2 += term(i + 2);
    s3 += term(i + 3);
  }
  for (; i < n; ++i) s0 += term(i);
  return (s0 + s1) + (s2 + s3);
}

// Memory-bound loops give each thread at least this many values (128 KiB of
// floats): below it, handing work to a thread costs more than it saves.
constexpr int64_t kElementwiseGrain = int64_t{1} << 15;

// The grain of a loop over units (planes, channels) of unit_size values each.
constexpr int64_t units_per_grain(int64_t unit_size) {
  return unit_size > 0 ? std::max<int64_t>(1, kElementwiseGrain / unit_size) : 1;
}

}  // namespace covidrate::cpu
