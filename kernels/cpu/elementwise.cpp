// Elementwise sum, per-channel scaling (the multiply of squeeze-and-excitation
// and of any learned channel gate) and per-pixel scaling (the multiply of an
// attention gate, model/unet.h).
#include "kernels/cpu/bf16_reference.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/threads.h"

namespace covidrate::cpu {

void add_forward(const Tensor& a, const Tensor& b, Tensor& y) {
  if (is_bf16(a)) return bf16_via_f32(y, [&](Tensor& y32) { add_forward(widened(a), widened(b), y32); });
  with_dtype(a, [&]<class T>() {
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* out = y.data<T>();
    parallel_for(a.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = pa[i] + pb[i];
    });
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
    parallel_for(planes, units_per_grain(hw), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p)
        for (int64_t i = 0; i < hw; ++i) out[p * hw + i] = in[p * hw + i] * scale[p];
    });
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
    // Each plane's sum stays on one thread: the same bits for any thread count.
    parallel_for(planes, units_per_grain(hw), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const T* gp = g + p * hw;
        const T* xp = in + p * hw;
        store_grads(d + p * hw, 0, hw, accumulate, [&](int64_t i) { return gp[i] * scale[p]; });
        const double sum = sum_in_double(hw, [&](int64_t i) { return double{gp[i]} * xp[i]; });
        store_grad(dscale[p], static_cast<T>(sum), accumulate);
      }
    });
  });
}

void mul_pixel_forward(const Tensor& x, const Tensor& a, Tensor& y) {
  if (is_bf16(x)) return bf16_via_f32(y, [&](Tensor& y32) { mul_pixel_forward(widened(x), widened(a), y32); });
  with_dtype(x, [&]<class T>() {
    const T* in = x.data<T>();
    const T* gate = a.data<T>();
    T* out = y.data<T>();
    const int64_t channels = x.c(), hw = x.h() * x.w();
    parallel_for(x.n() * channels, units_per_grain(hw), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const T* g = gate + (p / channels) * hw;
        for (int64_t i = 0; i < hw; ++i) out[p * hw + i] = in[p * hw + i] * g[i];
      }
    });
  });
}

void mul_pixel_backward(const Tensor& dy, const Tensor& x, const Tensor& a, Tensor& dx,
                        Tensor& da, bool accumulate) {
  with_dtype(x, [&]<class T>() {
    const T* g = dy.data<T>();
    const T* in = x.data<T>();
    const T* gate = a.data<T>();
    T* d = dx.data<T>();
    T* dgate = da.data<T>();
    const int64_t n = x.n(), channels = x.c(), hw = x.h() * x.w();
    // da first: a caller may pass dy's buffer as dx. Each pixel's sum over the
    // channels stays on one thread and runs in channel order: the same bits
    // for any thread count.
    parallel_for(n * hw, units_per_grain(channels), [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        const int64_t base = (j / hw) * channels * hw + j % hw;
        const double sum = sum_in_double(channels, [&](int64_t c) { return double{g[base + c * hw]} * in[base + c * hw]; });
        store_grad(dgate[j], static_cast<T>(sum), accumulate);
      }
    });
    parallel_for(n * channels, units_per_grain(hw), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const T* gp = g + p * hw;
        const T* ap = gate + (p / channels) * hw;
        store_grads(d + p * hw, 0, hw, accumulate, [&](int64_t i) { return gp[i] * ap[i]; });
      }
    });
  });
}

}  // namespace covidrate::cpu
