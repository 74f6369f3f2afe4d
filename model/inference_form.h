// The inference form of COVID-Rate's layers: the weights a deployed network
// runs with, built once by SegmentationNet::prepare_inference.
//
//   - Every batch norm is folded into the convolution(s) before it
//     (nn/fold_batchnorm.h has the algebra), so inference runs no BN at all.
//   - Every weight is cast to the compute dtype: F32, or BF16, whose ops store
//     bf16 and compute in f32 (docs/model.md, "Inference form").
//
// The fold is computed in float64 on the host and rounded ONCE to the compute
// dtype: a bf16 kernel is then the correctly rounded s*w, not a rounding of
// an f32 product that was rounded already.
//
// Why once: evaluation mode without it folds on the CPU at every forward call
// (a pass over every kernel per call) and runs BN's own kernel on CUDA, where
// the per-call fold would read channel factors back to the host at every
// layer. Folding at each call is what keeps the training network's evaluation
// from ever using stale weights; the inference form gets the same guarantee
// from being dropped by set_training(true) and refused after a load (see
// SegmentationNet::prepare_inference).
#pragma once
#include <vector>

#include "nn/fold_batchnorm.h"
#include "nn/layers.h"

namespace covidrate::model {

// One convolution of the inference form.
struct InferenceConv {
  ag::Var weight;  // [out, in, k, k] in the compute dtype
  ag::Var bias;    // [out], or undefined when the layer adds none
  ConvParams params;
  ag::Var forward(const ag::Var& x) const { return ag::conv2d(x, weight, bias, params); }
  // The same into `y`, which may be a view into a larger map (DecoderBlock
  // writes two halves of a concatenation this way). Without a tape only.
  void forward_into(const ag::Var& x, Tensor& y) const;
};

// The convolutions' kernels with `affine` folded in and the one bias they
// share, in float64 on the host, not yet rounded (fold_for_inference's algebra).
struct FoldedF64 {
  std::vector<std::vector<double>> kernels;  // one per conv, [out, in, k, k] row-major
  std::vector<double> bias;                  // [out]
  bool any_bias = false;                     // false: no conv had a bias and no affine was given
};
FoldedF64 fold_in_f64(const std::vector<const Conv2d*>& convs, const ChannelAffine* affine);

// The sum of `convs` (all with the same output channels) followed by the
// per-channel `affine` (null: none), as convolutions whose sum equals it:
// each kernel scaled by the affine's scale, and the convs' biases, scaled, plus
// the affine's shift gathered into ONE bias on the first (the others get
// none, so the shift is added once). On the weights' device, in `compute`.
//   one conv + BN:       fold_for_inference({&conv}, &bn_affine, compute)
//   CPB's five branches: fold_for_inference(branches, &bn_affine, compute)
//   a conv without BN:   fold_for_inference({&conv}, nullptr, compute) (a cast)
std::vector<InferenceConv> fold_for_inference(const std::vector<const Conv2d*>& convs,
                                              const ChannelAffine* affine, DType compute);

// A 3x3 "same" convolution of a 2x nearest-upsampled map, computed at the
// map's own resolution (the decoders' upsampling, then their first conv).
//
// Output pixel (2i+a, 2j+b), a, b in {0, 1}, sees upsampled rows 2i+a-1 ..
// 2i+a+1, which are input rows i-1, i, i (a = 0) or i, i, i+1 (a = 1): two
// distinct rows, one of them twice. So each of the four output phases (a, b)
// is a 2x2 convolution of the input whose taps are sums of the 3x3 taps:
//   rows for a = 0:  r = 0 <- k0,       r = 1 <- k1 + k2   (input rows i-1, i)
//   rows for a = 1:  r = 0 <- k0 + k1,  r = 1 <- k2        (input rows i, i+1)
// and the same for columns with b. One convolution with the four phases as
// 4*out output channels, a 2x2 kernel and pad 1 computes them all on an
// (H+1) x (W+1) grid: phase (a, b) of pixel (i, j) is at (i+a, j+b). Zero
// padding matches too: upsampled row -1 is input row -1, row 2H is row H.
// ops::interleave_phases_forward then puts the phases on the fine grid with
// the bias and the ReLU, in one pass.
//
// Why: 16 multiply-adds per coarse pixel and channel pair instead of 36 (4
// fine pixels x 9 taps), no upsampled map ([N, in, 2H, 2W], the largest
// tensor of the decoder) is written or read, and the bias pass is folded into
// the interleaving. The phase kernels are sums of BN-folded taps, computed in
// float64 and rounded once.
struct InferenceUpsampleConv {
  ag::Var phases;  // [4*out, in, 2, 2], phase (a, b) in channels (2a+b)*out ..
  ag::Var bias;    // [out], or undefined
  ConvParams params;
  bool relu = false;
  // == conv3x3(upsample2x(x)) (+ bias) (then ReLU)
  ag::Var forward(const ag::Var& x) const;
  // The same into `y` (a view is fine). Without a tape only.
  void forward_into(const ag::Var& x, Tensor& y) const;
};
// conv (3x3, stride 1, dilation 1, pad 1), then `affine` (null: none), then the
// ReLU when relu, as the four-phase form, in `compute` on the weights' device.
InferenceUpsampleConv upsample_conv_for_inference(const Conv2d& conv, const ChannelAffine* affine, bool relu,
                                                  DType compute);
// The four 2x2 phase kernels [4*out, in, 2, 2] of a [out, in, 3, 3] kernel (float64, row-major).
std::vector<double> phase_kernels(const std::vector<double>& kernel3x3, int64_t out, int64_t in);

// The residual squeeze-and-excitation block with its weights in `compute`.
struct InferenceSe {
  ag::Var fc1, fc2;
  ag::Var forward(const ag::Var& x) const { return ag::se(x, fc1, fc2); }
};
InferenceSe cast_for_inference(const SqueezeExcite& se, DType compute);

// x in another dtype on its device (x itself when it has that dtype already).
Tensor cast_to(const Tensor& x, DType dtype);

}  // namespace covidrate::model
