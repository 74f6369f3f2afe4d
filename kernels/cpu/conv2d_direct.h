// The convolution written as plain nested loops: the oracle the fast path in
// conv2d.cpp is tested against. Same signatures and contracts as the ops in
// kernels/op_signatures.inc (weights [Cout, Cin, KH, KW], dx overwrite or
// accumulate, dw and dbias accumulate). No argument checks: call it with
// arguments that ops:: would accept. Sums are carried in double, so the
// float results are at least as accurate as any fast path.
#pragma once
#include "kernels/ops.h"

namespace covidrate::cpu::direct {

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const ConvParams& p,
                    Tensor& y);
void conv2d_backward_data(const Tensor& dy, const Tensor& w, const ConvParams& p, Tensor& dx,
                          bool accumulate);
void conv2d_backward_filter(const Tensor& dy, const Tensor& x, const ConvParams& p, Tensor& dw,
                            Tensor* dbias);

}  // namespace covidrate::cpu::direct
