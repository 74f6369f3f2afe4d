// add and mul_channel (forwards in f32 or bf16). Parallel strategy: add is a flat streaming map;
// mul_channel maps over rows = N*C of H*W elements, so each block loads its
// s[n, c] once; mul_channel's ds[n, c] = sum_hw dy*x is a deterministic
// two-level reduction (block partials in double, then a fixed-order total per
// row), see row_kernels.cuh.
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

}  // namespace covidrate::cuda
