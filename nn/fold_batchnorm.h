// Batch normalization folded into the convolution before it, for inference.
//
// In evaluation mode BN is an affine map per channel o, with the running
// statistics:  bn(z)_o = s_o z_o + t_o,  s_o = gamma_o / sqrt(var_o + eps),
// t_o = beta_o - s_o mean_o. A convolution is linear in its kernel, so
//   bn(conv(x; w, b)) = conv(x; w', b'),   w'_o = s_o w_o,   b'_o = s_o (b_o - mean_o) + beta_o.
// That saves BN's pass over the convolution's output (a read and a write of
// every activation, memory-bound) for one pass over the kernel, which is
// smaller everywhere in COVID-Rate except at 1/16 resolution. The folded
// kernel is recomputed at every call rather than cached, so it can never go
// stale after a training step or a load of weights.
#pragma once
#include <vector>

#include "nn/layers.h"

namespace covidrate {

// BN in evaluation mode as an affine map per channel, in float64 on the host:
// bn(z)_o = scale_o z_o + shift_o.
struct ChannelAffine {
  std::vector<double> scale, shift;
};
ChannelAffine batchnorm_affine(const BatchNorm2d& bn);

struct FoldedConv {
  Tensor weight;  // [out, in, k, k]
  Tensor bias;    // [out]
};

// conv's kernel and bias (zero if it has none) with bn folded in, in the
// kernel's dtype, on its device. The per-channel factors are computed in
// float64 on the host; the kernel is scaled by ops::mul_channel_forward.
FoldedConv fold_batchnorm(const Conv2d& conv, const BatchNorm2d& bn);

// bn(conv(x)) with bn in evaluation mode, as one convolution with the folded
// kernel. Like BN's evaluation mode, it has no backward to the parameters:
// call it inside NoGrad.
ag::Var conv_bn_eval(const Conv2d& conv, const BatchNorm2d& bn, const ag::Var& x);

}  // namespace covidrate
