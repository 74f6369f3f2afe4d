// Elementwise sum and per-channel scaling (the multiply of squeeze-and-excitation
// and of any learned channel gate).
#include "kernels/cpu/bf16_reference.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"

namespace covidrate::cpu {

void add_forward(const Tensor& a, const Tensor& b, Tensor& y) {
  if (is_bf16(a)) return bf16_via_f32(y, [&](Tensor& y32) { add_forward(widened(a), widened(b), y32); });
  with_dtype(a, [&]<class T>() {
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* out = y.data<T>();
    for (int64_t i = 0, n = a.numel(); i < n; ++i) out[i] = pa[i] + pb[i];
  });
}

void mul_channel_forward(const Tensor& x, const Tensor& s, Tensor& y) {
  if (is_bf16(x))
    return bf16_via_f32(y, [&](Tensor& y32) { mul_channel_forward(widened(x), widened(s), y32); });
  with_dtype(x, [&]<class T>() {
    const T* in = x.data<T>();
    const T* scale = s.data<T>();
    T* out = y.data<T>();
    const int64_t planes = x.n() * x.c(), hw = x.h() * x.w();
    for (int64_t p = 0; p < planes; ++p)
      for (int64_t i = 0; i < hw; ++i) out[p * hw + i] = in[p * hw + i] * scale[p];
  });
}

void mul_channel_backward(const Tensor& dy, const Tensor& x, const Tensor& s, Tensor& dx,
                          Tensor& ds, bool accumulate) {
  with_dtype(x, [&]<class T>() {
    const T* g = dy.data<T>();
    const T* in = x.data<T>();
    const T* scale = s.data<T>();
    T* d = dx.data<T>();
    T* dscale = ds.data<T>();
    const int64_t planes = x.n() * x.c(), hw = x.h() * x.w();
    for (int64_t p = 0; p < planes; ++p) {
      double sum = 0;  // a whole plane: sum in double even for float
      for (int64_t i = 0; i < hw; ++i) {
        store_grad(d[p * hw + i], g[p * hw + i] * scale[p], accumulate);
        sum += static_cast<double>(g[p * hw + i]) * in[p * hw + i];
      }
      store_grad(dscale[p], static_cast<T>(sum), accumulate);
    }
  });
}

}  // namespace covidrate::cpu
