// Small helpers shared by the CPU twins: the dtype switch at each entry point
// and the overwrite/accumulate store of activation gradients.
#pragma once
#include "nn/tensor.h"

namespace covidrate::cpu {

// Runs fn.template operator()<T>() with T = double for F64 tensors, float otherwise
// (ops::* has already rejected every other dtype).
template <class Fn> void with_dtype(const Tensor& t, Fn&& fn) {
  if (t.dtype() == DType::F64) {
    fn.template operator()<double>();
  } else {
    fn.template operator()<float>();
  }
}

// The activation-gradient contract: overwrite, or add to what is there. Overwrite
// never reads dst, so a NaN-poisoned buffer stays harmless.
template <class T> inline void store_grad(T& dst, T value, bool accumulate) {
  dst = accumulate ? dst + value : value;
}

}  // namespace covidrate::cpu
