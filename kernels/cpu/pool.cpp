// Global average pooling [N, C, H, W] -> [N, C], the squeeze of squeeze-and-excitation.
#include "kernels/cpu/bf16_reference.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/threads.h"

namespace covidrate::cpu {

void global_avg_pool_forward(const Tensor& x, Tensor& y) {
  if (is_bf16(x)) return bf16_via_f32(y, [&](Tensor& y32) { global_avg_pool_forward(widened(x), y32); });
  with_dtype(x, [&]<class T>() {
    const T* in = x.data<T>();
    T* out = y.data<T>();
    const int64_t planes = x.n() * x.c(), hw = x.h() * x.w();
    // Each plane's sum stays on one thread: the same bits for any thread count.
    parallel_for(planes, units_per_grain(hw), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        out[p] = static_cast<T>(sum_in_double(hw, [&](int64_t i) { return double{in[p * hw + i]}; }) / static_cast<double>(hw));
      }
    });
  });
}

void global_avg_pool_backward(const Tensor& dy, Tensor& dx, bool accumulate) {
  with_dtype(dy, [&]<class T>() {
    const T* g = dy.data<T>();
    T* d = dx.data<T>();
    const int64_t planes = dx.n() * dx.c(), hw = dx.h() * dx.w();
    const T inv_hw = T(1) / static_cast<T>(hw);
    parallel_for(planes, units_per_grain(hw), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p)
        store_grads(d + p * hw, 0, hw, accumulate, [&](int64_t) { return g[p] * inv_hw; });
    });
  });
}

}  // namespace covidrate::cpu
