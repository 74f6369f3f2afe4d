// The four phases of an upsampled 3x3 convolution back on the fine grid, with
// the bias and the ReLU (the contract is in kernels/op_signatures.inc; the
// algebra that makes the phases is in model/inference_form.h). Output row 2i+a
// takes phases 2a and 2a+1 of phase row i+a, interleaved by column.
#include "kernels/cpu/bf16_reference.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/threads.h"

namespace covidrate::cpu {

void interleave_phases_forward(const Tensor& z, const Tensor* bias, bool relu, Tensor& y) {
  if (is_bf16(z)) {
    const Tensor bias32 = widened(bias);
    return bf16_via_f32(y, [&](Tensor& y32) {
      interleave_phases_forward(widened(z), bias ? &bias32 : nullptr, relu, y32);
    });
  }
  with_dtype(z, [&]<class T>() {
    const T* in = z.data<T>();
    const T* b = bias ? bias->data<T>() : nullptr;
    T* out = y.data<T>();
    const int64_t n = y.n(), c = y.c(), h = y.h() / 2, w = y.w() / 2;
    const int64_t zh = h + 1, zw = w + 1, zplane = zh * zw;
    parallel_for(n * c, units_per_grain(4 * h * w), [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t image = plane / c, channel = plane % c;
        const T add = b ? b[channel] : T(0);
        // The plane of phase p (= 2a + b) of this image and channel.
        const auto phase = [&](int p) { return in + (image * 4 * c + p * c + channel) * zplane; };
        T* dst = out + plane * 4 * h * w;
        for (int a = 0; a < 2; ++a) {
          const T* even = phase(2 * a);      // columns 2j:   phase (a, 0) at column j
          const T* odd = phase(2 * a + 1);   // columns 2j+1: phase (a, 1) at column j + 1
          for (int64_t i = 0; i < h; ++i) {
            const T* e = even + (i + a) * zw;
            const T* o = odd + (i + a) * zw + 1;
            T* row = dst + (2 * i + a) * 2 * w;
            for (int64_t j = 0; j < w; ++j) {
              T v0 = e[j] + add, v1 = o[j] + add;
              if (relu) {
                v0 = v0 > T(0) ? v0 : T(0);  // NaN > 0 is false: NaN becomes 0
                v1 = v1 > T(0) ? v1 : T(0);
              }
              row[2 * j] = v0;
              row[2 * j + 1] = v1;
            }
          }
        }
      }
    });
  });
}

}  // namespace covidrate::cpu
