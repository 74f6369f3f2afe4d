// fill, add_into, axpy: the memory ops every other op and the optimizer lean on.
#include <algorithm>

#include "kernels/cpu/cpu_ops.h"
#include "nn/half.h"

namespace covidrate::cpu {

namespace {
template <class T> void fill_impl(Tensor& y, double value) {
  std::fill_n(y.data<T>(), y.numel(), static_cast<T>(value));
}
template <class T> void add_into_impl(const Tensor& src, Tensor& dst, bool accumulate) {
  const T* s = src.data<T>();
  T* d = dst.data<T>();
  const int64_t n = src.numel();
  if (accumulate) {
    for (int64_t i = 0; i < n; ++i) d[i] += s[i];
  } else {
    std::copy_n(s, n, d);
  }
}
template <class T> void axpy_impl(double alpha, const Tensor& x, Tensor& y) {
  const T* xs = x.data<T>();
  T* ys = y.data<T>();
  const T a = static_cast<T>(alpha);
  for (int64_t i = 0, n = x.numel(); i < n; ++i) ys[i] += a * xs[i];
}
}  // namespace

void fill(Tensor& y, double value) {
  if (y.dtype() == DType::F64) return fill_impl<double>(y, value);
  if (y.dtype() == DType::BF16) {  // through f32 rounded to odd: value is rounded once (nn/half.h)
    const uint16_t bits = float_to_bf16_bits(double_to_float_round_to_odd(value));
    std::fill_n(static_cast<uint16_t*>(y.raw()), y.numel(), bits);
    return;
  }
  fill_impl<float>(y, value);
}
void add_into(const Tensor& src, Tensor& dst, bool accumulate) {
  if (src.dtype() == DType::F64) return add_into_impl<double>(src, dst, accumulate);
  add_into_impl<float>(src, dst, accumulate);
}
void axpy(double alpha, const Tensor& x, Tensor& y) {
  if (x.dtype() == DType::F64) return axpy_impl<double>(alpha, x, y);
  axpy_impl<float>(alpha, x, y);
}

}  // namespace covidrate::cpu
