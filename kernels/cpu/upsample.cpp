// 2x nearest-neighbour upsampling, the decoder's way back to full resolution.
// Each input pixel feeds a 2x2 output block, so its gradient is that block's sum.
#include <algorithm>

#include "kernels/cpu/bf16_reference.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/threads.h"

namespace covidrate::cpu {

void upsample2x_forward(const Tensor& x, Tensor& y) {
  if (is_bf16(x)) return bf16_via_f32(y, [&](Tensor& y32) { upsample2x_forward(widened(x), y32); });
  with_dtype(x, [&]<class T>() {
    const T* in = x.data<T>();
    T* out = y.data<T>();
    const int64_t planes = x.n() * x.c(), h = x.h(), w = x.w();
    parallel_for(planes, units_per_grain(4 * h * w), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const T* src = in + p * h * w;
        T* dst = out + p * 4 * h * w;
        for (int64_t i = 0; i < h; ++i) {
          T* row = dst + 2 * i * 2 * w;
          for (int64_t j = 0; j < w; ++j) row[2 * j] = row[2 * j + 1] = src[i * w + j];
          std::copy_n(row, 2 * w, row + 2 * w);  // the odd output row repeats the even one
        }
      }
    });
  });
}

void upsample2x_backward(const Tensor& dy, Tensor& dx, bool accumulate) {
  with_dtype(dy, [&]<class T>() {
    const T* g = dy.data<T>();
    T* d = dx.data<T>();
    const int64_t planes = dx.n() * dx.c(), h = dx.h(), w = dx.w();
    parallel_for(planes, units_per_grain(4 * h * w), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const T* src = g + p * 4 * h * w;
        for (int64_t i = 0; i < h; ++i) {
          const T* row0 = src + (2 * i) * 2 * w;
          const T* row1 = row0 + 2 * w;
          store_grads(d + p * h * w + i * w, 0, w, accumulate, [&](int64_t j) {
            return row0[2 * j] + row0[2 * j + 1] + row1[2 * j] + row1[2 * j + 1];
          });
        }
      }
    });
  });
}

}  // namespace covidrate::cpu
