// ReLU and sigmoid. Both backwards read the output y, not the input: y alone
// determines the derivative, and it is what the forward keeps anyway.
#include <cmath>

#include "kernels/cpu/bf16_reference.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/threads.h"

namespace covidrate::cpu {

void relu_forward(const Tensor& x, Tensor& y) {
  if (is_bf16(x)) return bf16_via_f32(y, [&](Tensor& y32) { relu_forward(widened(x), y32); });
  with_dtype(x, [&]<class T>() {
    const T* in = x.data<T>();
    T* out = y.data<T>();
    parallel_for(x.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = in[i] > T(0) ? in[i] : T(0);
    });
  });
}

void relu_backward(const Tensor& dy, const Tensor& y, Tensor& dx, bool accumulate) {
  with_dtype(dy, [&]<class T>() {
    const T* g = dy.data<T>();
    const T* out = y.data<T>();
    T* d = dx.data<T>();
    parallel_for(dy.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
      // g[i] is read whatever the sign, so the choice is a select, not a branch:
      // the signs of a ReLU's outputs are a coin toss that no predictor learns.
      store_grads(d, begin, end, accumulate, [&](int64_t i) {
        const T grad = g[i];
        return out[i] > T(0) ? grad : T(0);
      });
    });
  });
}

void sigmoid_forward(const Tensor& x, Tensor& y) {
  if (is_bf16(x)) return bf16_via_f32(y, [&](Tensor& y32) { sigmoid_forward(widened(x), y32); });
  with_dtype(x, [&]<class T>() {
    const T* in = x.data<T>();
    T* out = y.data<T>();
    parallel_for(x.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        // exp of a non-positive number only: no overflow for large |x|.
        const T e = std::exp(-std::abs(in[i]));
        out[i] = in[i] >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
      }
    });
  });
}

void sigmoid_backward(const Tensor& dy, const Tensor& y, Tensor& dx, bool accumulate) {
  with_dtype(dy, [&]<class T>() {
    const T* g = dy.data<T>();
    const T* out = y.data<T>();
    T* d = dx.data<T>();
    parallel_for(dy.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
      store_grads(d, begin, end, accumulate,
                  [&](int64_t i) { return g[i] * out[i] * (T(1) - out[i]); });
    });
  });
}

}  // namespace covidrate::cpu
