// Concatenation along channels. In NCHW, part k of sample n is one contiguous
// run of C_k*H*W floats inside y's sample n (at channel offset c0). Parallel
// strategy: one launch per part, a 2-D grid (x: pieces of the run, y: samples
// folded into a grid-stride loop); float4 when the run, both strides and both
// pointers allow it. Forward copies part -> slice (f32 or bf16: four elements
// per access either way), backward copies or adds slice -> part.
#include <algorithm>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/row_kernels.cuh"

namespace covidrate::cuda {

namespace {

// dst[n * dst_stride + j] (+)= src[n * src_stride + j] for n < rows, j < run.
// 16-bit types only copy (accumulating is a backward, float only).
template <int V, bool kAccumulate, class T>
__global__ void __launch_bounds__(kRowThreads)
    strided_copy_kernel(const T* __restrict__ src, int64_t src_stride, T* __restrict__ dst,
                        int64_t dst_stride, int64_t rows, int64_t run) {
  static_assert(std::is_same_v<T, float> || !kAccumulate, "strided_copy: only float accumulates");
  const int64_t step = int64_t{gridDim.x} * blockDim.x * V;
  for (int64_t n = blockIdx.y; n < rows; n += gridDim.y) {
    const T* s = src + n * src_stride;
    T* d = dst + n * dst_stride;
    for (int64_t j = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) * V; j < run; j += step) {
      if constexpr (!std::is_same_v<T, float>) {
        if constexpr (V == 4) {
          *reinterpret_cast<Quad<T>*>(d + j) = *reinterpret_cast<const Quad<T>*>(s + j);
        } else {
          d[j] = s[j];
        }
      } else if constexpr (V == 4) {
        float4 v = *reinterpret_cast<const float4*>(s + j);
        if constexpr (kAccumulate) {
          const float4 o = *reinterpret_cast<const float4*>(d + j);
          v.x += o.x; v.y += o.y; v.z += o.z; v.w += o.w;
        }
        *reinterpret_cast<float4*>(d + j) = v;
      } else {
        d[j] = kAccumulate ? d[j] + s[j] : s[j];
      }
    }
  }
}

template <bool kAccumulate, class T>
void strided_copy(const T* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows,
                  int64_t run) {
  if (rows == 0 || run == 0) return;
  const bool vec = quad_aligned(src) && quad_aligned(dst) && run % 4 == 0 && src_stride % 4 == 0 &&
                   dst_stride % 4 == 0;
  const int v = vec ? 4 : 1;
  // About 8 blocks per SM in all, spread over the samples first.
  const int64_t target = int64_t{std::max(context().sm_count, 1)} * 8;
  const auto grid_y = static_cast<unsigned>(std::min<int64_t>(rows, 65535));
  const int64_t per_row_blocks = std::max<int64_t>(1, target / grid_y);
  const int64_t needed = (run / v + kRowThreads - 1) / kRowThreads;
  const dim3 grid(static_cast<unsigned>(std::max<int64_t>(1, std::min(per_row_blocks, needed))), grid_y);
  const cudaStream_t s = context().stream;
  if (vec) {
    strided_copy_kernel<4, kAccumulate><<<grid, kRowThreads, 0, s>>>(src, src_stride, dst, dst_stride, rows, run);
  } else {
    strided_copy_kernel<1, kAccumulate><<<grid, kRowThreads, 0, s>>>(src, src_stride, dst, dst_stride, rows, run);
  }
  CUDA_CHECK_LAUNCH("strided_copy_kernel");
}

}  // namespace

void concat_channels_forward(const std::vector<Tensor>& xs, Tensor& y) {
  const int64_t hw = y.h() * y.w(), y_stride = y.c() * hw;
  with_element_type(y, [&]<class T>() {
    int64_t c0 = 0;
    for (const Tensor& x : xs) {
      const int64_t run = x.c() * hw;
      strided_copy<false>(elements<T>(x), run, elements<T>(y) + c0 * hw, y_stride, y.n(), run);
      c0 += x.c();
    }
  });
}

void concat_channels_backward(const Tensor& dy, std::vector<Tensor>& dxs, bool accumulate) {
  const int64_t hw = dy.h() * dy.w(), dy_stride = dy.c() * hw;
  int64_t c0 = 0;
  for (Tensor& dx : dxs) {
    const int64_t run = dx.c() * hw;
    const float* src = dy.data<float>() + c0 * hw;
    if (accumulate) {
      strided_copy<true>(src, dy_stride, dx.data<float>(), run, dy.n(), run);
    } else {
      strided_copy<false>(src, dy_stride, dx.data<float>(), run, dy.n(), run);
    }
    c0 += dx.c();
  }
}

}  // namespace covidrate::cuda
