// Every op of the engine, declared once.
//
// The op signatures are in kernels/op_signatures.inc. Each op exists twice with
// that exact signature: kernels/cpu/<op>.cpp in
// namespace covidrate::cpu (the reference, float and double: loops, and for the
// convolutions im2col or Winograd with OpenBLAS's gemm) and
// kernels/cuda/<op>.cu in namespace covidrate::cuda (float). The functions
// declared here in covidrate::ops check the arguments, then dispatch with one
// line on the device of the tensors (kernels/dispatch.cpp). All tensors of one
// call live on one device; outputs are allocated by the caller.
//
// bfloat16: the forward ops of inference (conv2d, relu, sigmoid, add,
// mul_channel, mul_pixel, concat, upsample2x, interleave_phases, maxpool2x2,
// global_avg_pool, linear, se) and fill also
// take BF16 tensors on both devices, all tensors of a call in BF16; cast
// converts between F32 and BF16/F16. bf16 is storage only: the arithmetic is
// float32 and results are rounded to nearest even (numerics in dispatch.cpp).
//
// Backward contract (as in llm.c and dlib):
//   - gradients of PARAMETERS (weights, biases, BN gamma/beta) always accumulate:
//     dW += ...; callers zero them before a step;
//   - gradients of ACTIVATIONS (dx) overwrite when accumulate == false and add
//     when accumulate == true (a value used twice receives two contributions).
#pragma once
#include <cstdint>
#include <vector>

#include "nn/tensor.h"

namespace covidrate {

// The certainty index's probability cut-off in the COVID-Rate paper (ops::certainty_index).
inline constexpr double kPaperCertaintyCutoff = 0.3;

// 2-D convolution. Weights are [Cout, Cin, KH, KW] (PyTorch's OIHW), bias [Cout].
// Output size: (H + 2*pad - dilation*(K-1) - 1) / stride + 1.
struct ConvParams {
  int stride = 1;
  int pad = 0;
  int dilation = 1;
  // Forward only (inference): y = max(conv + bias, 0), the ReLU applied as y is
  // stored instead of by a pass of its own over y (NaN becomes 0, as relu_forward
  // does). The backward ops refuse it: under training the ReLU is its own op on
  // the tape.
  bool relu = false;
  // Forward only: no gradient will be taken through this result (inference,
  // validation), so the CPU may trade a few float bits for speed: Winograd
  // F(4x4, 3x3) instead of F(2x2, 3x3) on large maps (kernels/cpu/conv2d_winograd.cpp;
  // CUDA's cuDNN chooses its algorithms itself). Not for training: the larger
  // tiles' rounding, carried through the forward's activations, made weight
  // gradients of the width-0.25 network up to 6x farther from float64's.
  // ag::conv2d sets it whenever no tape records; the backward ops refuse it.
  bool inference = false;
  // "same" padding for an odd kernel: keeps H, W at stride 1 and halves them at stride 2.
  static ConvParams same(int kernel, int stride = 1, int dilation = 1) {
    return {stride, dilation * (kernel - 1) / 2, dilation};
  }
};
int64_t conv_out_size(int64_t in, int kernel, const ConvParams& p);
Shape conv2d_out_shape(const Shape& x, const Shape& w, const ConvParams& p);

// Batch normalization over N, H, W per channel. momentum is the weight of the
// new batch in the running averages (PyTorch's convention: 0.01 equals Keras'
// momentum 0.99); running_var is updated with the unbiased batch variance.
struct BatchNormParams {
  double eps = 1e-3;       // Keras' default, used by the COVID-Rate reference code
  double momentum = 0.01;
};

// The hybrid loss of COVID-Rate on probabilities p (after the sigmoid) and a
// binary target y, both [N, 1, H, W]:
//   L = bce_weight * wBCE + kappa * (1 - TI)^(1/gamma)
//   wBCE = -(1/M) sum_i (1 + pos_weight*y_i) (y_i log p_i + (1-y_i) log(1-p_i)),  p clamped to [eps, 1-eps]
//   TI = (TP + smooth) / (TP + alpha*FN + beta*FP + smooth), sums over the whole batch
//   TP = sum p*y, FN = sum (1-p)*y, FP = sum p*(1-y)
// alpha weighs the false negatives as in the authors' code (the paper's formula
// writes it on the false positives; swap alpha and beta to follow the paper).
struct HybridLossParams {
  double pos_weight = 1.0;
  double bce_weight = 1.0;  // 0: focal Tversky loss alone
  double kappa = 1.0;       // 0: weighted BCE alone
  double alpha = 0.7;
  double beta = 0.3;
  double gamma = 4.0 / 3.0;
  double smooth = 1.0;
  double eps = 1e-7;
};
// What one pass over the batch gathers; the loss and its gradient follow from it.
struct LossSums {
  double tp = 0, fp = 0, fn = 0;
  double bce_sum = 0;  // sum of the weighted per-pixel BCE terms (not yet divided by count)
  int64_t count = 0;
  double loss = 0;     // the value of L
};

// Adam with the learning-rate decay of Keras 2 used by the authors' code:
//   lr_t = lr / (1 + decay * (t - 1)) * sqrt(1 - beta2^t) / (1 - beta1^t),  t = step >= 1
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  w -= lr_t * m / (sqrt(v) + eps)
struct AdamParams {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-7;
  double decay = 0.0;
};

// Saved by se_forward for se_backward (see op_signatures.inc).
struct SeSaved {
  Tensor pooled;  // z [N, C]
  Tensor hidden;  // h [N, Cr]
  Tensor scale;   // s [N, C]
};

namespace ops {
#include "kernels/op_signatures.inc"
}  // namespace ops
}  // namespace covidrate
