// ReLU and sigmoid, forward and backward. Parallel strategy: flat streaming
// maps (row_map over one row of numel elements, four elements per access when
// aligned); the backward reads y, not x, so the forward input need not be kept.
// The forwards also run on bf16 (f32 math, see row_kernels.cuh).
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/row_kernels.cuh"

namespace covidrate::cuda {

namespace {
struct Relu {
  __device__ float operator()(int64_t, const float (&v)[1], float) const {
    return v[0] > 0.f ? v[0] : 0.f;
  }
};
struct ReluGrad {  // v = {dy, y}
  __device__ float operator()(int64_t, const float (&v)[2], float old) const {
    return old + (v[1] > 0.f ? v[0] : 0.f);
  }
};
struct Sigmoid {
  __device__ float operator()(int64_t, const float (&v)[1], float) const { return sigmoid(v[0]); }
};
struct SigmoidGrad {  // v = {dy, y}
  __device__ float operator()(int64_t, const float (&v)[2], float old) const {
    return old + v[0] * v[1] * (1.f - v[1]);
  }
};
}  // namespace

void relu_forward(const Tensor& x, Tensor& y) {
  with_element_type(x, [&]<class T>() {
    row_map<false>(1, x.numel(), Inputs<1, T>{{elements<T>(x)}}, elements<T>(y), Relu{});
  });
}

void relu_backward(const Tensor& dy, const Tensor& y, Tensor& dx, bool accumulate) {
  row_map_into(accumulate, 1, dy.numel(), Inputs<2>{{dy.data<float>(), y.data<float>()}},
               dx.data<float>(), ReluGrad{});
}

void sigmoid_forward(const Tensor& x, Tensor& y) {
  with_element_type(x, [&]<class T>() {
    row_map<false>(1, x.numel(), Inputs<1, T>{{elements<T>(x)}}, elements<T>(y), Sigmoid{});
  });
}

void sigmoid_backward(const Tensor& dy, const Tensor& y, Tensor& dx, bool accumulate) {
  row_map_into(accumulate, 1, dy.numel(), Inputs<2>{{dy.data<float>(), y.data<float>()}},
               dx.data<float>(), SigmoidGrad{});
}

}  // namespace covidrate::cuda
