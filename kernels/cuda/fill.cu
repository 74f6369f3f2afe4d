// fill, add_into, axpy on the GPU. Parallel strategy: each is a flat
// streaming map (row_map over one row of numel elements, float4 when aligned,
// about 8 blocks per SM each streaming one contiguous piece); see row_kernels.cuh.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/row_kernels.cuh"
#include "nn/half.h"

namespace covidrate::cuda {

namespace {
struct Constant {
  float value;
  __device__ float operator()(int64_t, const float (&)[1], float) const { return value; }
};
struct PlusOld {  // src (+ old when accumulating)
  __device__ float operator()(int64_t, const float (&v)[1], float old) const { return old + v[0]; }
};
struct Axpy {
  float alpha;
  __device__ float operator()(int64_t, const float (&v)[1], float old) const {
    return fmaf(alpha, v[0], old);
  }
};
}  // namespace

void fill(Tensor& y, double value) {
  if (y.dtype() == DType::BF16) {
    // Rounded once on the host, as the CPU twin does; the kernel's f32 -> bf16 is then exact.
    const float exact = bf16_bits_to_float(float_to_bf16_bits(double_to_float_round_to_odd(value)));
    row_map<false>(1, y.numel(), Inputs<0, __nv_bfloat16>{}, elements<__nv_bfloat16>(y), Constant{exact});
    return;
  }
  row_map<false>(1, y.numel(), Inputs<0>{}, y.data<float>(), Constant{static_cast<float>(value)});
}

void add_into(const Tensor& src, Tensor& dst, bool accumulate) {
  if (!accumulate) {
    if (src.raw() == dst.raw()) return;  // copying onto itself: nothing to do
    // A plain copy: the copy engine path of the runtime is as fast as a kernel.
    CUDA_CHECK(cudaMemcpyAsync(dst.data<float>(), src.data<float>(), src.nbytes(),
                               cudaMemcpyDeviceToDevice, context().stream));
    return;
  }
  row_map<true>(1, src.numel(), Inputs<1>{{src.data<float>()}}, dst.data<float>(), PlusOld{});
}

void axpy(double alpha, const Tensor& x, Tensor& y) {
  row_map<true>(1, x.numel(), Inputs<1>{{x.data<float>()}}, y.data<float>(),
                Axpy{static_cast<float>(alpha)});
}

}  // namespace covidrate::cuda
