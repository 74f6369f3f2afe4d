// add and mul_channel (forwards in f32 or bf16). Parallel strategy: add is a flat streaming map;
// mul_channel maps over rows = N*C of H*W elements, so each block loads its
// s[n, c] once; mul_channel's ds[n, c] = sum_hw dy*x is a deterministic
// two-level reduction (block partials in double, then a fixed-order total per
// row), see row_kernels.cuh. mul_pixel (an attention gate's multiply) is a flat
// map that reads its gate a[n, h, w] for every channel; its da[n, h, w] =
// sum_c dy*x is one thread per pixel summing the channels in order (reads
// coalesced across neighbouring pixels; deterministic).
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/row_kernels.cuh"

namespace covidrate::cuda {

namespace {
struct Sum2 {
  __device__ float operator()(int64_t, const float (&v)[2], float) const { return v[0] + v[1]; }
};
template <class T> struct ScaleRow {  // old + v * s[row]
  const T* s;
  __device__ float operator()(int64_t row, const float (&v)[1], float old) const {
    return old + v[0] * to_float(s[row]);
  }
};
struct DotTerm {  // acc += v0 * v1
  __device__ void operator()(int64_t, const float (&v)[2], double (&acc)[1]) const {
    acc[0] += static_cast<double>(v[0]) * static_cast<double>(v[1]);
  }
};
struct StoreRowSum {
  float* out;
  bool accumulate;
  __device__ void operator()(int64_t row, const double (&sums)[1]) const {
    const float value = static_cast<float>(sums[0]);
    out[row] = accumulate ? out[row] + value : value;
  }
};
}  // namespace

void add_forward(const Tensor& a, const Tensor& b, Tensor& y) {
  with_element_type(a, [&]<class T>() {
    row_map<false>(1, a.numel(), Inputs<2, T>{{elements<T>(a), elements<T>(b)}}, elements<T>(y), Sum2{});
  });
}

void mul_channel_forward(const Tensor& x, const Tensor& s, Tensor& y) {
  with_element_type(x, [&]<class T>() {
    row_map<false>(x.n() * x.c(), x.h() * x.w(), Inputs<1, T>{{elements<T>(x)}}, elements<T>(y),
                   ScaleRow<T>{elements<T>(s)});
  });
}

void mul_channel_backward(const Tensor& dy, const Tensor& x, const Tensor& s, Tensor& dx,
                          Tensor& ds, bool accumulate) {
  const int64_t rows = x.n() * x.c(), hw = x.h() * x.w();
  // The reduction runs first, so the op stays correct when a caller reuses dy's buffer as dx.
  const Inputs<2> in{{dy.data<float>(), x.data<float>()}};
  const Partials partials = row_partials<1>(RowLayout{rows, 1, 0, hw}, in, DotTerm{});
  row_finish<1>(partials, StoreRowSum{ds.data<float>(), accumulate});
  row_map_into(accumulate, rows, hw, Inputs<1>{{dy.data<float>()}}, dx.data<float>(),
               ScaleRow<float>{s.data<float>()});
}

namespace {
template <class T>
__global__ void mul_pixel_forward_kernel(const T* x, const T* a, T* y, int64_t total, int64_t chw, int64_t hw) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x)
    y[i] = from_float<T>(to_float(x[i]) * to_float(a[(i / chw) * hw + i % hw]));
}

__global__ void mul_pixel_backward_kernel(const float* dy, const float* x, const float* a, float* dx, float* da,
                                          int64_t pixels, int64_t channels, int64_t hw, bool accumulate) {
  for (int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; j < pixels; j += int64_t{gridDim.x} * blockDim.x) {
    const int64_t base = (j / hw) * channels * hw + j % hw;
    const float gate = a[j];
    double sum = 0;
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t i = base + c * hw;
      const float g = dy[i];  // read before dx[i] is written: dx may be dy's buffer
      sum += static_cast<double>(g) * static_cast<double>(x[i]);
      dx[i] = accumulate ? dx[i] + g * gate : g * gate;
    }
    da[j] = accumulate ? da[j] + static_cast<float>(sum) : static_cast<float>(sum);
  }
}
}  // namespace

void mul_pixel_forward(const Tensor& x, const Tensor& a, Tensor& y) {
  const int64_t hw = x.h() * x.w();
  with_element_type(x, [&]<class T>() {
    mul_pixel_forward_kernel<T><<<grid_for(x.numel()), 256, 0, context().stream>>>(
        elements<T>(x), elements<T>(a), elements<T>(y), x.numel(), x.c() * hw, hw);
  });
  CUDA_CHECK_LAUNCH("mul_pixel_forward");
}

void mul_pixel_backward(const Tensor& dy, const Tensor& x, const Tensor& a, Tensor& dx,
                        Tensor& da, bool accumulate) {
  const int64_t hw = x.h() * x.w(), pixels = x.n() * hw;
  mul_pixel_backward_kernel<<<grid_for(pixels), 256, 0, context().stream>>>(
      dy.data<float>(), x.data<float>(), a.data<float>(), dx.data<float>(), da.data<float>(), pixels, x.c(), hw,
      accumulate);
  CUDA_CHECK_LAUNCH("mul_pixel_backward");
}

}  // namespace covidrate::cuda
