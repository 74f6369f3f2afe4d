// The four phases of an upsampled 3x3 convolution back on the fine grid, with
// the bias and the ReLU (contract: kernels/op_signatures.inc; the algebra:
// model/inference_form.h). It replaces three passes over full-resolution maps
// (the upsampling's write, the bias's read and write) with one read of the
// phases and one write of the output.
// Parallel strategy: the 2-D grid of grid2d.cuh over the output's coarse rows
// r = (n*C + c)*H + i and columns j; each thread reads the four phases at
// (i, j) .. (i+1, j+1), each read coalesced along j, and writes its 2x2 output
// block as two aligned pairs. Arithmetic in f32, stored rounded to T.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/grid2d.cuh"
#include "kernels/cuda/row_kernels.cuh"

namespace covidrate::cuda {

namespace {

template <class T> struct alignas(2 * sizeof(T)) Pair {
  T a, b;
};

template <bool kRelu> __device__ inline float activate(float v) {
  if constexpr (kRelu) return v > 0.f ? v : 0.f;  // NaN > 0 is false: NaN becomes 0
  return v;
}

// Stores (v0, v1) at p, p+1.
template <bool kVec2, class T> __device__ inline void store_pair(T* p, float v0, float v1) {
  if constexpr (kVec2) {
    *reinterpret_cast<Pair<T>*>(p) = Pair<T>{from_float<T>(v0), from_float<T>(v1)};
  } else {
    p[0] = from_float<T>(v0);
    p[1] = from_float<T>(v1);
  }
}

// rows = N*C*H coarse rows; z is [N, 4C, H+1, W+1], y [N, C, 2H, 2W].
template <bool kVec2, bool kRelu, class T>
__global__ void interleave_phases_kernel(const T* __restrict__ z, const T* __restrict__ bias,
                                         T* __restrict__ y, int64_t rows, int64_t channels,
                                         int64_t h, int64_t w) {
  const int64_t j = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (j >= w) return;
  const int64_t zw = w + 1, zplane = (h + 1) * zw, w2 = 2 * w;
  for (int64_t r = int64_t{blockIdx.y} * blockDim.y + threadIdx.y; r < rows;
       r += int64_t{gridDim.y} * blockDim.y) {
    const int64_t plane = r / h, i = r % h;  // plane = n*C + c
    const int64_t n = plane / channels, c = plane % channels;
    const float add = bias ? to_float(bias[c]) : 0.f;
    // Phase p's value for this thread: plane (n*4C + p*C + c), row i + a, column j + b.
    const T* phase0 = z + (n * 4 * channels + c) * zplane + i * zw + j;
    const int64_t next_phase = channels * zplane;
    const float p0 = to_float(phase0[0]);                        // (a, b) = (0, 0) at (i, j)
    const float p1 = to_float(phase0[next_phase + 1]);           // (0, 1) at (i, j + 1)
    const float p2 = to_float(phase0[2 * next_phase + zw]);      // (1, 0) at (i + 1, j)
    const float p3 = to_float(phase0[3 * next_phase + zw + 1]);  // (1, 1) at (i + 1, j + 1)
    T* top = y + plane * 4 * h * w + 2 * i * w2 + 2 * j;
    store_pair<kVec2>(top, activate<kRelu>(p0 + add), activate<kRelu>(p1 + add));
    store_pair<kVec2>(top + w2, activate<kRelu>(p2 + add), activate<kRelu>(p3 + add));
  }
}

template <bool kVec2, class T>
void launch(const Grid2d& g, const T* z, const T* bias, T* y, int64_t rows, int64_t channels, int64_t h,
            int64_t w, bool relu) {
  const cudaStream_t s = context().stream;
  if (relu) {
    interleave_phases_kernel<kVec2, true><<<g.grid, g.block, 0, s>>>(z, bias, y, rows, channels, h, w);
  } else {
    interleave_phases_kernel<kVec2, false><<<g.grid, g.block, 0, s>>>(z, bias, y, rows, channels, h, w);
  }
}

}  // namespace

void interleave_phases_forward(const Tensor& z, const Tensor* bias, bool relu, Tensor& y) {
  const int64_t channels = y.c(), h = y.h() / 2, w = y.w() / 2, rows = y.n() * channels * h;
  if (rows * w == 0) return;
  const Grid2d g = grid2d(rows, w);
  with_element_type(z, [&]<class T>() {
    const T* in = elements<T>(z);
    const T* b = bias ? elements<T>(*bias) : nullptr;
    T* out = elements<T>(y);
    // Every pair starts at an even column of a row of even length: aligned when y is.
    if (reinterpret_cast<uintptr_t>(out) % sizeof(Pair<T>) == 0) {
      launch<true>(g, in, b, out, rows, channels, h, w, relu);
    } else {
      launch<false>(g, in, b, out, rows, channels, h, w, relu);
    }
  });
  CUDA_CHECK_LAUNCH("interleave_phases_kernel");
}

}  // namespace covidrate::cuda
