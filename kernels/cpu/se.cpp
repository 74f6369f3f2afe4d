// The residual squeeze-and-excitation block, composed from the CPU primitives:
//   z = gap(x);  h = relu(z w1^T);  s = sigmoid(h w2^T);  y = x*s + x = x*(1 + s)
// The backward runs the chain in reverse; the only non-primitive steps are the
// fused first and last loops over x.
#include "kernels/cpu/bf16_reference.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/threads.h"

namespace covidrate::cpu {

void se_forward(const Tensor& x, const Tensor& w1, const Tensor& w2, Tensor& y, SeSaved& saved) {
  if (is_bf16(x)) {  // the saved z, h, s are outputs too: each is rounded once from f32
    SeSaved saved32{Tensor::empty(saved.pooled.shape()), Tensor::empty(saved.hidden.shape()),
                    Tensor::empty(saved.scale.shape())};
    bf16_via_f32(y, [&](Tensor& y32) { se_forward(widened(x), widened(w1), widened(w2), y32, saved32); });
    cast(saved32.pooled, saved.pooled);
    cast(saved32.hidden, saved.hidden);
    cast(saved32.scale, saved.scale);
    return;
  }
  global_avg_pool_forward(x, saved.pooled);
  linear_forward(saved.pooled, w1, saved.hidden);
  relu_forward(saved.hidden, saved.hidden);  // elementwise: in place is safe
  linear_forward(saved.hidden, w2, saved.scale);
  sigmoid_forward(saved.scale, saved.scale);
  with_dtype(x, [&]<class T>() {
    const T* in = x.data<T>();
    const T* s = saved.scale.data<T>();
    T* out = y.data<T>();
    const int64_t planes = x.n() * x.c(), hw = x.h() * x.w();
    parallel_for(planes, units_per_grain(hw), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p)
        for (int64_t i = 0; i < hw; ++i) out[p * hw + i] = in[p * hw + i] * (T(1) + s[p]);
    });
  });
}

void se_backward(const Tensor& dy, const Tensor& x, const Tensor& w1, const Tensor& w2,
                 const SeSaved& saved, Tensor& dx, Tensor& dw1, Tensor& dw2, bool accumulate) {
  const int64_t n = x.n(), c = x.c(), cr = w1.n();
  const Shape nc{n, c}, ncr{n, cr};
  // ds[n,c] = sum_hw dy * x, then through the sigmoid (ds becomes the pre-sigmoid gradient).
  Tensor ds = Tensor::empty(nc, x.dtype());
  with_dtype(x, [&]<class T>() {
    const T* g = dy.data<T>();
    const T* in = x.data<T>();
    const T* s = saved.scale.data<T>();
    T* d = ds.data<T>();
    const int64_t hw = x.h() * x.w();
    // Each plane's sum stays on one thread: the same bits for any thread count.
    parallel_for(n * c, units_per_grain(hw), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const T* gp = g + p * hw;
        const T* xp = in + p * hw;
        const double sum = sum_in_double(hw, [&](int64_t i) { return double{gp[i]} * xp[i]; });
        d[p] = static_cast<T>(sum) * s[p] * (T(1) - s[p]);
      }
    });
  });
  linear_backward_weight(ds, saved.hidden, dw2);
  Tensor dh = Tensor::empty(ncr, x.dtype());
  linear_backward_data(ds, w2, dh, false);
  relu_backward(dh, saved.hidden, dh, false);  // h = relu(.) > 0 exactly where relu passed
  linear_backward_weight(dh, saved.pooled, dw1);
  Tensor dz = Tensor::empty(nc, x.dtype());
  linear_backward_data(dh, w1, dz, false);
  // dx = dy * (1 + s) + dz / HW  (the direct path plus the path through the pooling).
  with_dtype(x, [&]<class T>() {
    const T* g = dy.data<T>();
    const T* s = saved.scale.data<T>();
    const T* dzp = dz.data<T>();
    T* d = dx.data<T>();
    const int64_t hw = x.h() * x.w();
    const T inv_hw = T(1) / static_cast<T>(hw);
    parallel_for(n * c, units_per_grain(hw), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const T* gp = g + p * hw;
        store_grads(d + p * hw, 0, hw, accumulate,
                    [&](int64_t i) { return gp[i] * (T(1) + s[p]) + dzp[p] * inv_hw; });
      }
    });
  });
}

}  // namespace covidrate::cpu
