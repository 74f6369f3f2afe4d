// cast between float32 and the 16-bit storage types on the GPU: a flat
// streaming map (row_map) whose loads widen and whose stores round to nearest
// even (__float2bfloat16_rn, __float2half_rn), four elements per access when
// aligned. NaN stays NaN and overflow becomes inf, as on the CPU (the NaN's
// payload bits may differ).
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/row_kernels.cuh"

namespace covidrate::cuda {

namespace {
struct Identity {
  __device__ float operator()(int64_t, const float (&v)[1], float) const { return v[0]; }
};
template <class From, class To> void convert(const Tensor& x, Tensor& y) {
  row_map<false>(1, x.numel(), Inputs<1, From>{{elements<From>(x)}}, elements<To>(y), Identity{});
}
}  // namespace

// ops::cast has checked that the pair is one of these four.
void cast(const Tensor& x, Tensor& y) {
  if (y.dtype() == DType::BF16) return convert<float, __nv_bfloat16>(x, y);
  if (y.dtype() == DType::F16) return convert<float, __half>(x, y);
  if (x.dtype() == DType::BF16) return convert<__nv_bfloat16, float>(x, y);
  convert<__half, float>(x, y);
}

}  // namespace covidrate::cuda
