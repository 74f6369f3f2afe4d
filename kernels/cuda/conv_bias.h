// The epilogue of a convolution's forward pass, run after cuDNN's convolution
// (kernels/cuda/cudnn_conv.cpp): the per-channel bias of a bf16 convolution,
// and the fused ReLU of ConvParams::relu. Only compiled when COVIDRATE_HAVE_CUDA.
#pragma once
#include "nn/tensor.h"

namespace covidrate::cuda {

// y[n, c, h, w] = y + bias[c] (bias may be null: + 0), then max(., 0) when
// relu (NaN becomes 0, as relu_forward), in f32, stored back rounded to y's
// dtype (F32 or BF16). One pass over y.
void add_channel_bias(const Tensor* bias, Tensor& y, bool relu);

}  // namespace covidrate::cuda
