// Convolutions whose whole filter bank is tiny, run by our own kernel instead
// of cuDNN (kernels/cuda/cudnn_conv.cpp asks first). Only compiled when
// COVIDRATE_HAVE_CUDA.
//
// Why: COVID-Rate's full-resolution layers with few channels are memory-bound
// or nearly so, and cuDNN's NCHW kernels for them measured far from what the
// bytes allow (H200, bf16, batch 16, 512²; the choices of cuDNN's own
// search): the 7x7 stem 1 -> 32 0.81 ms, the stride-2 1x1 shortcut 32 -> 32
// 0.48 ms, the head 64 -> 1 0.53 ms (it reads 0.5 GB: ~0.12 ms at the HBM's
// speed), the last transition 32 -> 64 0.57 ms; each then had the bias (and
// ReLU) added in a pass of its own. Here one thread computes every output
// channel of one or two output pixels, the filter bank sits in shared memory,
// and the bias and ReLU are applied as the output is stored: one read of the
// input, one write of the output.
#pragma once
#include <optional>

#include "kernels/ops.h"

namespace covidrate::cuda {

// True when conv2d_forward(x, w, ...) runs here: at most kDirectConvMacs
// multiply-adds per output pixel (in x kh x kw x out), at most 64 output
// channels, and not turned off by COVIDRATE_DIRECT_CONV=0 (read once; for
// A/B timing against cuDNN).
constexpr int64_t kDirectConvMacs = 2048;
bool direct_conv_applies(const Tensor& x, const Tensor& w, const ConvParams& p);

// For tests and benchmarks that put the two side by side: tiny filter banks
// run here (true) or in cuDNN (false) from the next call on; nullopt goes back
// to COVIDRATE_DIRECT_CONV's choice.
void set_direct_conv(std::optional<bool> on);

// The forward of ops::conv2d_forward (any stride, padding, dilation), bias
// and ConvParams::relu included; f32 or bf16, arithmetic in f32, the output
// rounded once.
void direct_conv_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const ConvParams& p, Tensor& y);

}  // namespace covidrate::cuda
