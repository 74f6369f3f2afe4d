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
};

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

// The residual squeeze-and-excitation block with its weights in `compute`.
struct InferenceSe {
  ag::Var fc1, fc2;
  ag::Var forward(const ag::Var& x) const { return ag::se(x, fc1, fc2); }
};
InferenceSe cast_for_inference(const SqueezeExcite& se, DType compute);

// x in another dtype on its device (x itself when it has that dtype already).
Tensor cast_to(const Tensor& x, DType dtype);

}  // namespace covidrate::model
