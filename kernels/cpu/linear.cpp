// Fully connected layer without bias, y = x w^T. The sizes in COVID-Rate are
// tiny (the SE block's C -> C/r -> C), so plain loops beat a BLAS call's overhead.
#include "kernels/cpu/bf16_reference.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"

namespace covidrate::cpu {

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y) {
  if (is_bf16(x)) return bf16_via_f32(y, [&](Tensor& y32) { linear_forward(widened(x), widened(w), y32); });
  with_dtype(x, [&]<class T>() {
    const T* in = x.data<T>();
    const T* wt = w.data<T>();
    T* out = y.data<T>();
    const int64_t rows = x.n(), n_out = w.n(), n_in = w.c();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < n_out; ++o) {
        T sum = 0;
        for (int64_t i = 0; i < n_in; ++i) sum += in[r * n_in + i] * wt[o * n_in + i];
        out[r * n_out + o] = sum;
      }
  });
}

void linear_backward_data(const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate) {
  with_dtype(dy, [&]<class T>() {
    const T* g = dy.data<T>();
    const T* wt = w.data<T>();
    T* d = dx.data<T>();
    const int64_t rows = dx.n(), n_out = w.n(), n_in = w.c();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < n_in; ++i) {
        T sum = 0;
        for (int64_t o = 0; o < n_out; ++o) sum += g[r * n_out + o] * wt[o * n_in + i];
        store_grad(d[r * n_in + i], sum, accumulate);
      }
  });
}

void linear_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw) {
  with_dtype(dy, [&]<class T>() {
    const T* g = dy.data<T>();
    const T* in = x.data<T>();
    T* d = dw.data<T>();
    const int64_t rows = x.n(), n_out = dw.n(), n_in = dw.c();
    for (int64_t o = 0; o < n_out; ++o)
      for (int64_t i = 0; i < n_in; ++i) {
        T sum = 0;
        for (int64_t r = 0; r < rows; ++r) sum += g[r * n_out + o] * in[r * n_in + i];
        d[o * n_in + i] += sum;  // a parameter gradient: always accumulates
      }
  });
}

}  // namespace covidrate::cpu
