// The CPU reference of the bfloat16 forward ops: widen every input to f32, run
// the f32 twin, round the output to bf16 (round to nearest even, nn/half.h).
//
// WHY not native bf16 loops: the CPU bf16 path exists to define what the GPU
// must compute ("the f32 op on the bf16 values, rounded once") and to test it.
// Reusing the f32 code makes that definition true by construction; speed does
// not matter here. Each op's bf16 path is then one line:
//
//   if (is_bf16(x)) return bf16_via_f32(y, [&](Tensor& y32) { relu_forward(widened(x), y32); });
#pragma once
#include "kernels/cpu/cpu_ops.h"

namespace covidrate::cpu {

inline bool is_bf16(const Tensor& t) { return t.dtype() == DType::BF16; }

// An f32 copy of a 16-bit tensor (exact).
inline Tensor widened(const Tensor& t) {
  Tensor wide = Tensor::empty(t.shape(), DType::F32);
  cast(t, wide);
  return wide;
}
inline Tensor widened(const Tensor* t) { return t ? widened(*t) : Tensor(); }

// Runs f32_op(y32) on an f32 output of y's shape, then rounds y32 into y.
template <class Fn> void bf16_via_f32(Tensor& y, Fn&& f32_op) {
  Tensor y32 = Tensor::empty(y.shape(), DType::F32);
  f32_op(y32);
  cast(y32, y);
}

}  // namespace covidrate::cpu
