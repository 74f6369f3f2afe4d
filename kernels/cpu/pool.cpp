// Global average pooling [N, C, H, W] -> [N, C], the squeeze of squeeze-and-excitation.
#include "kernels/cpu/bf16_reference.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"

namespace covidrate::cpu {

void global_avg_pool_forward(const Tensor& x, Tensor& y) {
  if (is_bf16(x)) return bf16_via_f32(y, [&](Tensor& y32) { global_avg_pool_forward(widened(x), y32); });
  with_dtype(x, [&]<class T>() {
    const T* in = x.data<T>();
    T* out = y.data<T>();
    const int64_t planes = x.n() * x.c(), hw = x.h() * x.w();
    for (int64_t p = 0; p < planes; ++p) {
      double sum = 0;  // whole planes of a CT slice: sum in double even for float
      for (int64_t i = 0; i < hw; ++i) sum += in[p * hw + i];
      out[p] = static_cast<T>(sum / static_cast<double>(hw));
    }
  });
}

void global_avg_pool_backward(const Tensor& dy, Tensor& dx, bool accumulate) {
  with_dtype(dy, [&]<class T>() {
    const T* g = dy.data<T>();
    T* d = dx.data<T>();
    const int64_t planes = dx.n() * dx.c(), hw = dx.h() * dx.w();
    const T inv_hw = T(1) / static_cast<T>(hw);
    for (int64_t p = 0; p < planes; ++p)
      for (int64_t i = 0; i < hw; ++i) store_grad(d[p * hw + i], g[p] * inv_hw, accumulate);
  });
}

}  // namespace covidrate::cpu
