// The per-channel bias of a bf16 convolution's output, added after cuDNN's
// convolution (kernels/cuda/cudnn_conv.cpp). Only compiled when COVIDRATE_HAVE_CUDA.
#pragma once
#include "nn/tensor.h"

namespace covidrate::cuda {

// y[n, c, h, w] += bias[c] in f32, stored back rounded to y's dtype (F32 or BF16).
void add_channel_bias(const Tensor& bias, Tensor& y);

}  // namespace covidrate::cuda
