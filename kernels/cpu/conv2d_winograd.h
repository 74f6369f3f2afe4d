// Winograd's minimal filtering F(2x2, 3x3) for the CPU forward convolution
// (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
// Internal to kernels/cpu: conv2d.cpp calls it for the layers it applies to.
#pragma once
#include "kernels/ops.h"

namespace covidrate::cpu {

// 3x3 kernel, stride 1, any dilation, padding at most 2*dilation (so that the
// transposed convolution of the backward pass has a padding >= 0 too): the bulk
// of COVID-Rate's convolutions.
bool winograd_applies(const Tensor& w, const ConvParams& p);

// The three passes of ops::conv2d_* (same contracts, arguments as checked
// there) for layers where winograd_applies.
void winograd_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const ConvParams& p,
                      Tensor& y);
void winograd_backward_data(const Tensor& dy, const Tensor& w, const ConvParams& p, Tensor& dx,
                            bool accumulate);
// dw += the weight gradient (the bias gradient is not computed here).
void winograd_backward_filter(const Tensor& dy, const Tensor& x, const ConvParams& p, Tensor& dw);

}  // namespace covidrate::cpu
