// Per-channel bias and fused ReLU, y = max(y + b[c], 0). cuDNN's cudnnAddTensor
// adds the bias of a plain f32 convolution; for bf16 this kernel does it with
// the element types of row_kernels.cuh (bf16 loads, f32 add, round to nearest
// even on the store), so the bf16 path does not rest on which data types
// cudnnAddTensor accepts. With ConvParams::relu it also applies the ReLU in the
// same pass: at COVID-Rate's full-resolution layers each pass over y moves
// 0.25-0.5 GiB for a batch of 16 in bf16, and a separate ReLU was one more.
// Parallel strategy: a streaming map over the per-channel row layout (rows =
// C, N segments of H*W), so each block reads its channel's bias once.
#include "kernels/cuda/conv_bias.h"
#include "kernels/cuda/row_kernels.cuh"

namespace covidrate::cuda {

namespace {
template <class T, bool kRelu> struct PlusBias {
  const T* bias;  // null: no bias
  __device__ float operator()(int64_t channel, const float (&)[1], float old) const {
    const float v = bias ? old + to_float(bias[channel]) : old;
    if constexpr (kRelu) return v > 0.f ? v : 0.f;
    return v;
  }
};
}  // namespace

void add_channel_bias(const Tensor* bias, Tensor& y, bool relu) {
  const int64_t hw = y.h() * y.w();
  const RowLayout per_channel{y.c(), y.n(), y.c() * hw, hw};
  with_element_type(y, [&]<class T>() {
    const T* b = bias ? elements<T>(*bias) : nullptr;
    if (relu) {
      row_map<true>(per_channel, Inputs<0, T>{}, elements<T>(y), PlusBias<T, true>{b});
    } else {
      row_map<true>(per_channel, Inputs<0, T>{}, elements<T>(y), PlusBias<T, false>{b});
    }
  });
}

}  // namespace covidrate::cuda
