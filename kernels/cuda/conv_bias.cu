// Per-channel bias, y += b[c]. cuDNN's cudnnAddTensor does this for the f32
// convolutions; for bf16 this kernel does it with the element types of
// row_kernels.cuh (bf16 loads, f32 add, round to nearest even on the store),
// so the bf16 path does not rest on which data types cudnnAddTensor accepts.
// Parallel strategy: a streaming map over the per-channel row layout (rows =
// C, N segments of H*W), so each block reads its channel's bias once.
#include "kernels/cuda/conv_bias.h"
#include "kernels/cuda/row_kernels.cuh"

namespace covidrate::cuda {

namespace {
template <class T> struct PlusBias {
  const T* bias;
  __device__ float operator()(int64_t channel, const float (&)[1], float old) const {
    return old + to_float(bias[channel]);
  }
};
}  // namespace

void add_channel_bias(const Tensor& bias, Tensor& y) {
  const int64_t hw = y.h() * y.w();
  const RowLayout per_channel{y.c(), y.n(), y.c() * hw, hw};
  with_element_type(y, [&]<class T>() {
    row_map<true>(per_channel, Inputs<0, T>{}, elements<T>(y), PlusBias<T>{elements<T>(bias)});
  });
}

}  // namespace covidrate::cuda
