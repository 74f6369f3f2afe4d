// 2x2 max pooling, stride 2. In NCHW, output row r = (n*C + c)*Ho + i reads
// input rows 2r and 2r+1, so rows never need decoding. Parallel strategy: a
// 2-D grid, x over the output columns, y over the output rows (see grid2d.cuh);
// each thread owns one 2x2 window, read (and, backward, written) as float2
// pairs when aligned. The backward recomputes the argmax from x instead of
// saving indices, and writes all four dx of its window, so every dx element is
// written exactly once: no atomics, no zero-fill pass.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/grid2d.cuh"
#include "kernels/cuda/row_kernels.cuh"

namespace covidrate::cuda {

namespace {

struct Window {
  float2 top, bottom;
};

template <bool kVec2> __device__ inline float2 load_pair(const float* p) {
  if constexpr (kVec2) return *reinterpret_cast<const float2*>(p);
  return make_float2(p[0], p[1]);
}

// Index 0..3 of the maximum in row-major order; ties go to the first, exactly
// as the CPU twin (a later element wins only if strictly greater).
__device__ inline int argmax4(const Window& win, float* max_out) {
  float best = win.top.x;
  int at = 0;
  if (win.top.y > best) { best = win.top.y; at = 1; }
  if (win.bottom.x > best) { best = win.bottom.x; at = 2; }
  if (win.bottom.y > best) { best = win.bottom.y; at = 3; }
  *max_out = best;
  return at;
}

// The window of the output pixel whose top-left input is `top`, in f32 (bf16
// widened exactly).
template <class T, bool kVec2> __device__ inline Window load_window(const T* top, int64_t w) {
  if constexpr (std::is_same_v<T, float>) {
    return {load_pair<kVec2>(top), load_pair<kVec2>(top + w)};
  } else {
    return {make_float2(to_float(top[0]), to_float(top[1])), make_float2(to_float(top[w]), to_float(top[w + 1]))};
  }
}

// f32, and bf16 for the U-Net baselines' inference form: the winner is stored
// as it was read (the maximum of bf16 values is exact).
template <class T, bool kVec2>
__global__ void maxpool2x2_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t wo) {
  const int64_t j = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (j >= wo) return;
  const int64_t w = 2 * wo;
  for (int64_t r = int64_t{blockIdx.y} * blockDim.y + threadIdx.y; r < rows;
       r += int64_t{gridDim.y} * blockDim.y) {
    const T* top = x + (2 * r) * w + 2 * j;
    float best;
    const int at = argmax4(load_window<T, kVec2>(top, w), &best);
    y[r * wo + j] = top[(at / 2) * w + at % 2];
  }
}

template <bool kVec2, bool kAccumulate>
__global__ void maxpool2x2_backward_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                           float* __restrict__ dx, int64_t rows, int64_t wo) {
  const int64_t j = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (j >= wo) return;
  const int64_t w = 2 * wo;
  for (int64_t r = int64_t{blockIdx.y} * blockDim.y + threadIdx.y; r < rows;
       r += int64_t{gridDim.y} * blockDim.y) {
    const int64_t top = (2 * r) * w + 2 * j;
    const Window win{load_pair<kVec2>(x + top), load_pair<kVec2>(x + top + w)};
    float best;
    const int at = argmax4(win, &best);
    const float g = dy[r * wo + j];
    float2 t = make_float2(at == 0 ? g : 0.f, at == 1 ? g : 0.f);
    float2 b = make_float2(at == 2 ? g : 0.f, at == 3 ? g : 0.f);
    float* dtop = dx + top;
    float* dbottom = dtop + w;
    if constexpr (kAccumulate) {
      const float2 ot = load_pair<kVec2>(dtop), ob = load_pair<kVec2>(dbottom);
      t.x += ot.x; t.y += ot.y;
      b.x += ob.x; b.y += ob.y;
    }
    if constexpr (kVec2) {
      *reinterpret_cast<float2*>(dtop) = t;
      *reinterpret_cast<float2*>(dbottom) = b;
    } else {
      dtop[0] = t.x; dtop[1] = t.y;
      dbottom[0] = b.x; dbottom[1] = b.y;
    }
  }
}

}  // namespace

void maxpool2x2_forward(const Tensor& x, Tensor& y) {
  const int64_t rows = y.n() * y.c() * y.h(), wo = y.w();
  if (rows * wo == 0) return;
  const Grid2d g = grid2d(rows, wo);
  const cudaStream_t s = context().stream;
  if (x.dtype() == DType::BF16) {
    maxpool2x2_forward_kernel<__nv_bfloat16, false>
        <<<g.grid, g.block, 0, s>>>(elements<__nv_bfloat16>(x), elements<__nv_bfloat16>(y), rows, wo);
  } else if (aligned8(x.data<float>())) {
    maxpool2x2_forward_kernel<float, true><<<g.grid, g.block, 0, s>>>(x.data<float>(), y.data<float>(), rows, wo);
  } else {
    maxpool2x2_forward_kernel<float, false><<<g.grid, g.block, 0, s>>>(x.data<float>(), y.data<float>(), rows, wo);
  }
  CUDA_CHECK_LAUNCH("maxpool2x2_forward_kernel");
}

void maxpool2x2_backward(const Tensor& dy, const Tensor& x, Tensor& dx, bool accumulate) {
  const int64_t rows = dy.n() * dy.c() * dy.h(), wo = dy.w();
  if (rows * wo == 0) return;
  const Grid2d g = grid2d(rows, wo);
  const float* in = x.data<float>();
  float* out = dx.data<float>();
  const bool vec = aligned8(in) && aligned8(out);
  const cudaStream_t s = context().stream;
  if (vec && accumulate) {
    maxpool2x2_backward_kernel<true, true><<<g.grid, g.block, 0, s>>>(dy.data<float>(), in, out, rows, wo);
  } else if (vec) {
    maxpool2x2_backward_kernel<true, false><<<g.grid, g.block, 0, s>>>(dy.data<float>(), in, out, rows, wo);
  } else if (accumulate) {
    maxpool2x2_backward_kernel<false, true><<<g.grid, g.block, 0, s>>>(dy.data<float>(), in, out, rows, wo);
  } else {
    maxpool2x2_backward_kernel<false, false><<<g.grid, g.block, 0, s>>>(dy.data<float>(), in, out, rows, wo);
  }
  CUDA_CHECK_LAUNCH("maxpool2x2_backward_kernel");
}

}  // namespace covidrate::cuda
