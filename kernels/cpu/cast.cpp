// cast: between float32 and the 16-bit storage formats (bf16, f16). The
// rounding lives once, in nn/half.cpp; this is the loop around it.
#include "kernels/cpu/cpu_ops.h"
#include "nn/half.h"

namespace covidrate::cpu {

namespace {
template <uint16_t (*Narrow)(float)> void narrow(const Tensor& x, Tensor& y) {
  const float* in = x.data<float>();
  auto* out = static_cast<uint16_t*>(y.raw());
  for (int64_t i = 0, n = x.numel(); i < n; ++i) out[i] = Narrow(in[i]);
}
template <float (*Widen)(uint16_t)> void widen(const Tensor& x, Tensor& y) {
  const auto* in = static_cast<const uint16_t*>(x.raw());
  float* out = y.data<float>();
  for (int64_t i = 0, n = x.numel(); i < n; ++i) out[i] = Widen(in[i]);
}
}  // namespace

// ops::cast has checked that the pair is one of these four.
void cast(const Tensor& x, Tensor& y) {
  if (y.dtype() == DType::BF16) return narrow<float_to_bf16_bits>(x, y);
  if (y.dtype() == DType::F16) return narrow<float_to_half_bits>(x, y);
  if (x.dtype() == DType::BF16) return widen<bf16_bits_to_float>(x, y);
  widen<half_bits_to_float>(x, y);
}

}  // namespace covidrate::cpu
