// 2x2 max pooling with stride 2. The backward recomputes the argmax from x
// instead of saving indices: one less buffer, and x is kept for the backward anyway.
// Ties go to the first element in row-major order (strict '>' in that order),
// the rule the CUDA twin follows too.
#include "kernels/cpu/bf16_reference.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/threads.h"

namespace covidrate::cpu {

namespace {
// Offset (0..3 as row*2+col) of the largest of the window whose top-left is p.
template <class T> int argmax2x2(const T* p, int64_t w) {
  const T v[4] = {p[0], p[1], p[w], p[w + 1]};
  int best = 0;
  for (int k = 1; k < 4; ++k)
    if (v[k] > v[best]) best = k;
  return best;
}
}  // namespace

void maxpool2x2_forward(const Tensor& x, Tensor& y) {
  // bf16: the maximum of bf16 values is one of them, exact in f32 and back.
  if (is_bf16(x)) return bf16_via_f32(y, [&](Tensor& y32) { maxpool2x2_forward(widened(x), y32); });
  with_dtype(x, [&]<class T>() {
    const T* in = x.data<T>();
    T* out = y.data<T>();
    const int64_t planes = x.n() * x.c(), h = x.h(), w = x.w(), oh = h / 2, ow = w / 2;
    parallel_for(planes, units_per_grain(h * w), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p)
        for (int64_t i = 0; i < oh; ++i)
          for (int64_t j = 0; j < ow; ++j) {
            const T* win = in + p * h * w + 2 * i * w + 2 * j;
            const int k = argmax2x2(win, w);
            out[p * oh * ow + i * ow + j] = win[(k / 2) * w + k % 2];
          }
    });
  });
}

void maxpool2x2_backward(const Tensor& dy, const Tensor& x, Tensor& dx, bool accumulate) {
  with_dtype(x, [&]<class T>() {
    const T* in = x.data<T>();
    const T* g = dy.data<T>();
    T* d = dx.data<T>();
    const int64_t planes = x.n() * x.c(), h = x.h(), w = x.w(), oh = h / 2, ow = w / 2;
    for (int64_t p = 0; p < planes; ++p)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          const int64_t top_left = p * h * w + 2 * i * w + 2 * j;
          const int best = argmax2x2(in + top_left, w);
          const T grad = g[p * oh * ow + i * ow + j];
          for (int k = 0; k < 4; ++k)
            store_grad(d[top_left + (k / 2) * w + k % 2], k == best ? grad : T(0), accumulate);
        }
  });
}

}  // namespace covidrate::cpu
