// 2x nearest-neighbour upsampling. In NCHW, input row r = (n*C + c)*H + i maps
// to output rows 2r and 2r+1, so rows never need decoding. Parallel strategy:
// a 2-D grid, x over the input columns, y over the input rows (grid-stride
// when there are more than 65535 row blocks); each thread owns one input
// element and its 2x2 output block, moved as float2 pairs when aligned.
// The backward sums the 2x2 block in a fixed order: deterministic.
// The forward, a pure copy, also runs on bf16 (exact: no arithmetic).
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/grid2d.cuh"
#include "kernels/cuda/row_kernels.cuh"

namespace covidrate::cuda {

namespace {

// Two neighbouring elements as one aligned store.
template <class T> struct alignas(2 * sizeof(T)) Pair {
  T a, b;
};

template <bool kVec2, class T>
__global__ void upsample2x_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                          int64_t rows, int64_t w) {
  const int64_t j = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (j >= w) return;
  const int64_t w2 = 2 * w;
  for (int64_t r = int64_t{blockIdx.y} * blockDim.y + threadIdx.y; r < rows;
       r += int64_t{gridDim.y} * blockDim.y) {
    const T v = x[r * w + j];
    T* top = y + (2 * r) * w2 + 2 * j;
    T* bottom = top + w2;
    if constexpr (kVec2) {
      *reinterpret_cast<Pair<T>*>(top) = Pair<T>{v, v};
      *reinterpret_cast<Pair<T>*>(bottom) = Pair<T>{v, v};
    } else {
      top[0] = v; top[1] = v;
      bottom[0] = v; bottom[1] = v;
    }
  }
}

template <bool kVec2, bool kAccumulate>
__global__ void upsample2x_backward_kernel(const float* __restrict__ dy, float* __restrict__ dx,
                                           int64_t rows, int64_t w) {
  const int64_t j = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (j >= w) return;
  const int64_t w2 = 2 * w;
  for (int64_t r = int64_t{blockIdx.y} * blockDim.y + threadIdx.y; r < rows;
       r += int64_t{gridDim.y} * blockDim.y) {
    const float* top = dy + (2 * r) * w2 + 2 * j;
    const float* bottom = top + w2;
    float2 a, b;
    if constexpr (kVec2) {
      a = *reinterpret_cast<const float2*>(top);
      b = *reinterpret_cast<const float2*>(bottom);
    } else {
      a = make_float2(top[0], top[1]);
      b = make_float2(bottom[0], bottom[1]);
    }
    const float g = ((a.x + a.y) + b.x) + b.y;  // row-major order, as the CPU twin
    float& out = dx[r * w + j];
    out = kAccumulate ? out + g : g;
  }
}

}  // namespace

void upsample2x_forward(const Tensor& x, Tensor& y) {
  const int64_t rows = x.n() * x.c() * x.h(), w = x.w();
  if (rows * w == 0) return;
  const Grid2d g = grid2d(rows, w);
  with_element_type(x, [&]<class T>() {
    const T* in = elements<T>(x);
    T* out = elements<T>(y);
    if (reinterpret_cast<uintptr_t>(out) % sizeof(Pair<T>) == 0) {
      upsample2x_forward_kernel<true><<<g.grid, g.block, 0, context().stream>>>(in, out, rows, w);
    } else {
      upsample2x_forward_kernel<false><<<g.grid, g.block, 0, context().stream>>>(in, out, rows, w);
    }
  });
  CUDA_CHECK_LAUNCH("upsample2x_forward_kernel");
}

void upsample2x_backward(const Tensor& dy, Tensor& dx, bool accumulate) {
  const int64_t rows = dx.n() * dx.c() * dx.h(), w = dx.w();
  if (rows * w == 0) return;
  const Grid2d g = grid2d(rows, w);
  const float* in = dy.data<float>();
  float* out = dx.data<float>();
  const cudaStream_t s = context().stream;
  const bool vec = aligned8(in);
  if (vec && accumulate) {
    upsample2x_backward_kernel<true, true><<<g.grid, g.block, 0, s>>>(in, out, rows, w);
  } else if (vec) {
    upsample2x_backward_kernel<true, false><<<g.grid, g.block, 0, s>>>(in, out, rows, w);
  } else if (accumulate) {
    upsample2x_backward_kernel<false, true><<<g.grid, g.block, 0, s>>>(in, out, rows, w);
  } else {
    upsample2x_backward_kernel<false, false><<<g.grid, g.block, 0, s>>>(in, out, rows, w);
  }
  CUDA_CHECK_LAUNCH("upsample2x_backward_kernel");
}

}  // namespace covidrate::cuda
