// Winograd's minimal filtering F(2x2, 3x3), F(4x4, 3x3) and F(4x4, 2x2) for the CPU convolutions
// (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
// Internal to kernels/cpu: conv2d.cpp calls it for the layers it applies to.
#pragma once
#include "kernels/ops.h"

namespace covidrate::cpu {

// 3x3 kernel, stride 1, any dilation, padding at most 2*dilation (so that the
// transposed convolution of the backward pass has a padding >= 0 too): the bulk
// of COVID-Rate's convolutions.
bool winograd_applies(const Tensor& w, const ConvParams& p);
// The forward pass also takes, in inference (ConvParams::inference), 2x2
// kernels at stride 1 without dilation, padding at most 1: the four-phase
// up-convolutions of the inference form, by F(4x4, 2x2).
bool winograd_forward_applies(const Tensor& w, const ConvParams& p);

// The output tile side m of F(m x m, 3x3) for a forward pass with an output of
// ho x wo at this dilation: with ConvParams::inference, 4 on maps large enough
// for its bigger tiles to pay (see choose_tile), else 2; always 2 when a
// gradient will be taken (the training forward and both backward passes keep
// F(2x2)'s accuracy).
int winograd_tile(int64_t ho, int64_t wo, int64_t dilation, bool inference);
// Forces m (2 or 4) for every layer, or 0 to go back to choosing per layer:
// for tests of both tile sizes and for benchmarks comparing them. Process-wide.
void set_winograd_tile(int m);

// The three passes of ops::conv2d_* (same contracts, arguments as checked
// there) for layers where winograd_applies.
void winograd_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const ConvParams& p,
                      Tensor& y);
void winograd_backward_data(const Tensor& dy, const Tensor& w, const ConvParams& p, Tensor& dx,
                            bool accumulate);
// dw += the weight gradient (the bias gradient is not computed here).
void winograd_backward_filter(const Tensor& dy, const Tensor& x, const ConvParams& p, Tensor& dw);

}  // namespace covidrate::cpu
