// Concatenation along channels. In NCHW each sample of a part is one contiguous
// block of C*H*W values, so both directions are block copies per sample.
#include <algorithm>

#include "kernels/cpu/bf16_reference.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/threads.h"

namespace covidrate::cpu {

void concat_channels_forward(const std::vector<Tensor>& xs, Tensor& y) {
  if (is_bf16(y)) {
    std::vector<Tensor> wide;
    for (const Tensor& x : xs) wide.push_back(widened(x));
    return bf16_via_f32(y, [&](Tensor& y32) { concat_channels_forward(wide, y32); });
  }
  with_dtype(y, [&]<class T>() {
    T* out = y.data<T>();
    const int64_t hw = y.h() * y.w(), out_block = y.c() * hw;
    int64_t channel_offset = 0;
    for (const Tensor& x : xs) {
      const T* in = x.data<T>();
      const int64_t block = x.c() * hw;
      for (int64_t n = 0; n < y.n(); ++n) {
        T* dst = out + n * out_block + channel_offset * hw;
        parallel_for(block, kElementwiseGrain, [&](int64_t begin, int64_t end) {
          std::copy(in + n * block + begin, in + n * block + end, dst + begin);
        });
      }
      channel_offset += x.c();
    }
  });
}

void concat_channels_backward(const Tensor& dy, std::vector<Tensor>& dxs, bool accumulate) {
  with_dtype(dy, [&]<class T>() {
    const T* g = dy.data<T>();
    const int64_t hw = dy.h() * dy.w(), dy_block = dy.c() * hw;
    int64_t channel_offset = 0;
    for (Tensor& dx : dxs) {
      T* d = dx.data<T>();
      const int64_t block = dx.c() * hw;
      for (int64_t n = 0; n < dy.n(); ++n) {
        const T* src = g + n * dy_block + channel_offset * hw;
        T* dst = d + n * block;
        parallel_for(block, kElementwiseGrain, [&](int64_t begin, int64_t end) {
          store_grads(dst, begin, end, accumulate, [&](int64_t i) { return src[i]; });
        });
      }
      channel_offset += dx.c();
    }
  });
}

}  // namespace covidrate::cpu
