// Winograd's minimal filtering F(2x2, 3x3) for the CPU forward convolution
// (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
// Internal to kernels/cpu: conv2d.cpp calls it for the layers it applies to.
#pragma once
#include "kernels/ops.h"

namespace covidrate::cpu {

// 3x3 kernel, stride 1, dilation 1 (any padding): the bulk of COVID-Rate's
// convolutions.
bool winograd_applies(const Tensor& w, const ConvParams& p);

// y = conv(x, w) + bias for a layer where winograd_applies; arguments as checked
// by ops::conv2d_forward.
void winograd_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const ConvParams& p,
                      Tensor& y);

}  // namespace covidrate::cpu
