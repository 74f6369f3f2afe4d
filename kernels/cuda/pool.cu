// Global average pooling [N, C, H, W] -> [N, C] (forward in f32 or bf16,
// summed in double either way). Parallel strategy: the
// forward is a deterministic two-level row reduction over rows = N*C of H*W
// elements (block partials in double, then a fixed-order total per row); the
// backward is a row map that broadcasts dy[n, c] / (H*W) over its row.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/row_kernels.cuh"

namespace covidrate::cuda {

namespace {
struct SumTerm {
  __device__ void operator()(int64_t, const float (&v)[1], double (&acc)[1]) const { acc[0] += v[0]; }
};
template <class T> struct StoreMean {
  T* y;
  double count;
  __device__ void operator()(int64_t row, const double (&sums)[1]) const {
    y[row] = from_float<T>(static_cast<float>(sums[0] / count));
  }
};
struct BroadcastMean {
  const float* dy;
  float inv_count;
  __device__ float operator()(int64_t row, const float (&)[1], float old) const {
    return old + dy[row] * inv_count;
  }
};
}  // namespace

void global_avg_pool_forward(const Tensor& x, Tensor& y) {
  const int64_t rows = x.n() * x.c(), hw = x.h() * x.w();
  with_element_type(x, [&]<class T>() {
    const Inputs<1, T> in{{elements<T>(x)}};
    const Partials partials = row_partials<1>(RowLayout{rows, 1, 0, hw}, in, SumTerm{});
    row_finish<1>(partials, StoreMean<T>{elements<T>(y), static_cast<double>(hw)});
  });
}

void global_avg_pool_backward(const Tensor& dy, Tensor& dx, bool accumulate) {
  const int64_t hw = dx.h() * dx.w();
  row_map_into(accumulate, dx.n() * dx.c(), hw, Inputs<0>{}, dx.data<float>(),
               BroadcastMean{dy.data<float>(), 1.f / static_cast<float>(hw)});
}

}  // namespace covidrate::cuda
