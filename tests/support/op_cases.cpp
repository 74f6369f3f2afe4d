// The one table of op cases (see op_cases.h). Rules every case follows, because the
// same lambdas run in float64 on the CPU and in float32 on the GPU:
//   - every output and every temporary comes from `alloc`, on the inputs' device;
//   - inputs are never modified (ops that update state in place work on copies);
//   - host values (the loss) reach the device through Tensor::copy_from.
#include "tests/support/op_cases.h"

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"

namespace covidrate::test {

namespace {

using Tensors = std::vector<Tensor>;
constexpr Role kAct = Role::Activation;
constexpr Role kParam = Role::Parameter;
constexpr Role kConst = Role::Constant;

// A copy of t allocated through alloc.
Tensor copy_of(const Tensor& t, const Alloc& alloc) {
  Tensor c = alloc(t.shape(), t);
  c.copy_from(t);
  return c;
}

// ---------------------------------------------------------------- convolution
// relu: the inference form's fused ReLU (ConvParams::relu), forward only.
// On CUDA the forward of a filter bank of at most 2048 multiply-adds per pixel
// and 64 outputs runs in our direct kernel (kernels/cuda/conv_direct.h), a
// larger one in cuDNN: the default 3 -> 4 channels take the first path, the
// "wide" cases the second.
// Beyond the channels, the shapes segment's inference form makes: batch 1
// (a study's last batch, the in-place decoder) with an odd pixel count, which
// leaves the direct kernel a short last group of pixels; no bias (the phase
// convolutions, bias-free folds); and the four-phase form's 2x2 kernel with
// padding 1 on a map that is not square.
struct Channels {
  int64_t in = 3, out = 4;
  int64_t batch = 2;
  bool bias = true;
  int pad = -1;        // -1: "same" for the odd kernel
  int64_t width = 0;   // 0: square
};
OpCase conv_case(int kernel, int stride, int dilation, int64_t size, bool relu = false, Channels ch = {}) {
  ConvParams p = ConvParams::same(kernel, stride, dilation);
  if (ch.pad >= 0) p.pad = ch.pad;
  p.relu = relu;
  OpCase c;
  c.name = "conv2d k" + std::to_string(kernel) + " s" + std::to_string(stride) + " d" +
           std::to_string(dilation) + (relu ? " fused relu" : "");
  if (ch.in != 3 || ch.out != 4) c.name += " " + std::to_string(ch.in) + "->" + std::to_string(ch.out);
  if (ch.batch != 2) c.name += " batch " + std::to_string(ch.batch);
  if (!ch.bias) c.name += " no bias";
  if (ch.pad >= 0) c.name += " pad " + std::to_string(ch.pad);
  const int64_t width = ch.width > 0 ? ch.width : size;
  if (width != size) c.name += " " + std::to_string(size) + "x" + std::to_string(width);
  c.inputs = {{{ch.batch, ch.in, size, width}}, {{ch.out, ch.in, kernel, kernel}, Gen::Normal, kParam}};
  if (ch.bias) c.inputs.push_back({{ch.out}, Gen::Normal, kParam});
  const bool bias = ch.bias;
  c.forward = [p, bias](const Tensors& in, const Alloc& alloc) {
    Tensor y = alloc(conv2d_out_shape(in[0].shape(), in[1].shape(), p), in[0]);
    ops::conv2d_forward(in[0], in[1], bias ? &in[2] : nullptr, p, y);
    return Tensors{y};
  };
  if (!relu) {
    c.backward = [p, bias](const Tensors& in, const Tensors&, const Tensors& dys, Tensors& grads,
                           bool accumulate, const Alloc&) {
      ops::conv2d_backward_data(dys[0], in[1], p, grads[0], accumulate);
      ops::conv2d_backward_filter(dys[0], in[0], p, grads[1], bias ? &grads[2] : nullptr);
    };
  }
  c.parity_rtol = 1e-4;
  c.parity_atol = 1e-4 * std::max<double>(1.0, std::sqrt(static_cast<double>(ch.in) / 3.0));  // sums of in*k*k products in float32
  // bf16: both sides sum exact products in f32, in different orders (cuDNN's
  // tensor cores), and CUDA rounds twice: the convolution to bf16, then the
  // sum with the bias. Where the bias cancels much of the convolution, the
  // first rounding (half an ulp of the convolution) can be several ulps of the
  // result; it is at most about one ulp of the output's largest value.
  c.bf16 = true;
  c.bf16_ulps = 2;
  c.bf16_scale_ulps = 1;
  return c;
}

// ---------------------------------------------------------------- batch normalization
// Inputs: x, gamma, beta, running_mean, running_var.
std::vector<OpInput> bn_inputs(const Shape& x, Role x_role) {
  const Shape ch{x.c()};
  return {{x, Gen::Normal, x_role},
          {ch, Gen::Positive, kParam},
          {ch, Gen::Normal, kParam},
          {ch, Gen::Normal, kConst},
          {ch, Gen::Positive, kConst}};
}

OpCase bn_train_case() {
  OpCase c;
  c.name = "batchnorm train";
  c.inputs = bn_inputs({2, 3, 4, 5}, kAct);
  // Outputs: y, save_mean, save_invstd, and the updated running mean and variance
  // (copies: the inputs stay as they were, so finite differences see the same state).
  c.forward = [](const Tensors& in, const Alloc& alloc) {
    const BatchNormParams p;
    Tensor y = alloc(in[0].shape(), in[0]);
    Tensor mean = alloc(in[1].shape(), in[0]), invstd = alloc(in[1].shape(), in[0]);
    Tensor rm = copy_of(in[3], alloc), rv = copy_of(in[4], alloc);
    ops::batchnorm_forward_train(in[0], in[1], in[2], p, rm, rv, y, mean, invstd);
    return Tensors{y, mean, invstd, rm, rv};
  };
  c.output_differentiable = {true, false, false, false, false};
  c.backward = [](const Tensors& in, const Tensors& out, const Tensors& dys, Tensors& grads,
                  bool accumulate, const Alloc&) {
    ops::batchnorm_backward(dys[0], in[0], in[1], out[1], out[2], grads[0], grads[1], grads[2],
                            accumulate);
  };
  return c;
}

OpCase bn_infer_case() {
  OpCase c;
  c.name = "batchnorm infer";
  c.inputs = bn_inputs({2, 3, 4, 5}, kConst);
  c.forward = [](const Tensors& in, const Alloc& alloc) {
    Tensor y = alloc(in[0].shape(), in[0]);
    ops::batchnorm_forward_infer(in[0], in[1], in[2], in[3], in[4], BatchNormParams{}, y);
    return Tensors{y};
  };
  // Inference only: the engine has no backward through frozen statistics.
  return c;
}

// ---------------------------------------------------------------- activations
OpCase relu_case() {
  OpCase c;
  c.name = "relu";
  // Normal inputs: the gradient test moves them away from 0 (the kink); the
  // parity test compares values, where the kink does no harm.
  c.inputs = {{{2, 3, 4, 5}}};
  c.forward = [](const Tensors& in, const Alloc& alloc) {
    Tensor y = alloc(in[0].shape(), in[0]);
    ops::relu_forward(in[0], y);
    return Tensors{y};
  };
  c.backward = [](const Tensors&, const Tensors& out, const Tensors& dys, Tensors& grads,
                  bool accumulate, const Alloc&) {
    ops::relu_backward(dys[0], out[0], grads[0], accumulate);
  };
  c.bf16 = true;  // a comparison: exact
  return c;
}

OpCase sigmoid_case() {
  OpCase c;
  c.name = "sigmoid";
  c.inputs = {{{2, 3, 4, 5}}};
  c.forward = [](const Tensors& in, const Alloc& alloc) {
    Tensor y = alloc(in[0].shape(), in[0]);
    ops::sigmoid_forward(in[0], y);
    return Tensors{y};
  };
  c.backward = [](const Tensors&, const Tensors& out, const Tensors& dys, Tensors& grads,
                  bool accumulate, const Alloc&) {
    ops::sigmoid_backward(dys[0], out[0], grads[0], accumulate);
  };
  c.bf16 = true;
  c.bf16_ulps = 1;  // expf differs from std::exp in the last f32 bits: a rounding may flip
  return c;
}

// ---------------------------------------------------------------- elementwise
OpCase add_case() {
  OpCase c;
  c.name = "add";
  c.inputs = {{{2, 3, 4, 5}}, {{2, 3, 4, 5}}};
  c.forward = [](const Tensors& in, const Alloc& alloc) {
    Tensor y = alloc(in[0].shape(), in[0]);
    ops::add_forward(in[0], in[1], y);
    return Tensors{y};
  };
  c.backward = [](const Tensors&, const Tensors&, const Tensors& dys, Tensors& grads,
                  bool accumulate, const Alloc&) {
    ops::add_into(dys[0], grads[0], accumulate);
    ops::add_into(dys[0], grads[1], accumulate);
  };
  c.bf16 = true;  // one f32 add, one rounding: exact
  return c;
}

OpCase mul_channel_case() {
  OpCase c;
  c.name = "mul_channel";
  c.inputs = {{{2, 3, 4, 5}}, {{2, 3}}};
  c.forward = [](const Tensors& in, const Alloc& alloc) {
    Tensor y = alloc(in[0].shape(), in[0]);
    ops::mul_channel_forward(in[0], in[1], y);
    return Tensors{y};
  };
  c.backward = [](const Tensors& in, const Tensors&, const Tensors& dys, Tensors& grads,
                  bool accumulate, const Alloc&) {
    ops::mul_channel_backward(dys[0], in[0], in[1], grads[0], grads[1], accumulate);
  };
  c.bf16 = true;  // one f32 multiply, one rounding: exact
  return c;
}

OpCase mul_pixel_case() {
  OpCase c;
  c.name = "mul_pixel";
  c.inputs = {{{2, 3, 4, 5}}, {{2, 1, 4, 5}, Gen::Probability}};
  c.forward = [](const Tensors& in, const Alloc& alloc) {
    Tensor y = alloc(in[0].shape(), in[0]);
    ops::mul_pixel_forward(in[0], in[1], y);
    return Tensors{y};
  };
  c.backward = [](const Tensors& in, const Tensors&, const Tensors& dys, Tensors& grads,
                  bool accumulate, const Alloc&) {
    ops::mul_pixel_backward(dys[0], in[0], in[1], grads[0], grads[1], accumulate);
  };
  c.bf16 = true;  // one f32 multiply, one rounding: exact
  return c;
}

// ---------------------------------------------------------------- shape ops
OpCase concat_case(const std::vector<int64_t>& channels) {
  OpCase c;
  c.name = "concat of " + std::to_string(channels.size());
  int64_t total = 0;
  for (int64_t ch : channels) {
    c.inputs.push_back({{2, ch, 3, 4}});
    total += ch;
  }
  c.forward = [total](const Tensors& in, const Alloc& alloc) {
    Tensor y = alloc({2, total, 3, 4}, in[0]);
    ops::concat_channels_forward(in, y);
    return Tensors{y};
  };
  c.backward = [](const Tensors&, const Tensors&, const Tensors& dys, Tensors& grads,
                  bool accumulate, const Alloc&) {
    ops::concat_channels_backward(dys[0], grads, accumulate);
  };
  c.bf16 = true;  // copies: exact
  return c;
}

OpCase upsample_case() {
  OpCase c;
  c.name = "upsample2x";
  c.inputs = {{{2, 3, 3, 4}}};
  c.forward = [](const Tensors& in, const Alloc& alloc) {
    const Tensor& x = in[0];
    Tensor y = alloc({x.n(), x.c(), 2 * x.h(), 2 * x.w()}, x);
    ops::upsample2x_forward(x, y);
    return Tensors{y};
  };
  c.backward = [](const Tensors&, const Tensors&, const Tensors& dys, Tensors& grads,
                  bool accumulate, const Alloc&) {
    ops::upsample2x_backward(dys[0], grads[0], accumulate);
  };
  c.bf16 = true;  // copies: exact
  return c;
}

// The inference form's interleaving of an upsampled conv's four phases
// (forward only). z is [N, 4C, H+1, W+1] with H != W, so a swapped row and
// column would show; with_bias also fuses the bias and the ReLU.
OpCase interleave_phases_case(bool with_bias) {
  OpCase c;
  c.name = with_bias ? "interleave phases + bias + relu" : "interleave phases";
  c.inputs = {{{2, 4 * 3, 4, 6}, Gen::Normal, kConst}};
  if (with_bias) c.inputs.push_back({{3}, Gen::Normal, kConst});
  c.forward = [with_bias](const Tensors& in, const Alloc& alloc) {
    const Tensor& z = in[0];
    Tensor y = alloc({z.n(), z.c() / 4, 2 * (z.h() - 1), 2 * (z.w() - 1)}, z);
    ops::interleave_phases_forward(z, with_bias ? &in[1] : nullptr, with_bias, y);
    return Tensors{y};
  };
  // No backward. bf16: both sides add in f32 and round once, so the results are equal.
  c.bf16 = true;
  return c;
}

OpCase maxpool_case() {
  OpCase c;
  c.name = "maxpool2x2";
  // Continuous random inputs have no ties (nor near-ties within grad_eps, at these seeds).
  c.inputs = {{{2, 3, 4, 6}}};
  c.forward = [](const Tensors& in, const Alloc& alloc) {
    const Tensor& x = in[0];
    Tensor y = alloc({x.n(), x.c(), x.h() / 2, x.w() / 2}, x);
    ops::maxpool2x2_forward(x, y);
    return Tensors{y};
  };
  c.backward = [](const Tensors& in, const Tensors&, const Tensors& dys, Tensors& grads,
                  bool accumulate, const Alloc&) {
    ops::maxpool2x2_backward(dys[0], in[0], grads[0], accumulate);
  };
  c.bf16 = true;  // the winner itself: exact
  return c;
}

OpCase gap_case() {
  OpCase c;
  c.name = "global_avg_pool";
  c.inputs = {{{2, 3, 4, 5}}};
  c.forward = [](const Tensors& in, const Alloc& alloc) {
    Tensor y = alloc({in[0].n(), in[0].c()}, in[0]);
    ops::global_avg_pool_forward(in[0], y);
    return Tensors{y};
  };
  c.backward = [](const Tensors&, const Tensors&, const Tensors& dys, Tensors& grads,
                  bool accumulate, const Alloc&) {
    ops::global_avg_pool_backward(dys[0], grads[0], accumulate);
  };
  c.bf16 = true;
  c.bf16_ulps = 1;  // double sums in another order: the f32 mean may differ in its last bit
  return c;
}

// ---------------------------------------------------------------- fully connected, SE
OpCase linear_case() {
  OpCase c;
  c.name = "linear";
  c.inputs = {{{4, 6}}, {{5, 6}, Gen::Normal, kParam}};
  c.forward = [](const Tensors& in, const Alloc& alloc) {
    Tensor y = alloc({in[0].n(), in[1].n()}, in[0]);
    ops::linear_forward(in[0], in[1], y);
    return Tensors{y};
  };
  c.backward = [](const Tensors& in, const Tensors&, const Tensors& dys, Tensors& grads,
                  bool accumulate, const Alloc&) {
    ops::linear_backward_data(dys[0], in[1], grads[0], accumulate);
    ops::linear_backward_weight(dys[0], in[0], grads[1]);
  };
  c.bf16 = true;  // cuBLAS sums the 6 exact products in f32 in its own order
  c.bf16_ulps = 1;
  c.bf16_scale_ulps = 0.25;
  return c;
}

OpCase se_case() {
  OpCase c;
  c.name = "squeeze_excitation";
  c.inputs = {{{2, 4, 3, 5}}, {{2, 4}, Gen::Normal, kParam}, {{4, 2}, Gen::Normal, kParam}};
  // Outputs: y and the saved z, h, s (compared in the parity test, not differentiated).
  c.forward = [](const Tensors& in, const Alloc& alloc) {
    const Tensor& x = in[0];
    Tensor y = alloc(x.shape(), x);
    SeSaved saved{alloc({x.n(), x.c()}, x), alloc({x.n(), in[1].n()}, x), alloc({x.n(), x.c()}, x)};
    ops::se_forward(x, in[1], in[2], y, saved);
    return Tensors{y, saved.pooled, saved.hidden, saved.scale};
  };
  c.output_differentiable = {true, false, false, false};
  c.backward = [](const Tensors& in, const Tensors& out, const Tensors& dys, Tensors& grads,
                  bool accumulate, const Alloc&) {
    const SeSaved saved{out[1], out[2], out[3]};
    ops::se_backward(dys[0], in[0], in[1], in[2], saved, grads[0], grads[1], grads[2], accumulate);
  };
  // bf16: the FC dot products sum in another order (h, s may flip a rounding;
  // h can come out of cancellation), and CUDA's y reads the rounded s, at most
  // about one more ulp (kernels/cuda/se.cu).
  c.bf16 = true;
  c.bf16_ulps = 2;
  c.bf16_scale_ulps = 0.5;
  return c;
}

// ---------------------------------------------------------------- loss
// Outputs: the loss [1] and the gathered sums [TP, FP, FN, BCE sum] (not differentiated).
OpCase loss_case(const std::string& name, const HybridLossParams& params) {
  OpCase c;
  c.name = name;
  c.inputs = {{{2, 1, 6, 6}, Gen::Probability, kAct}, {{2, 1, 6, 6}, Gen::Binary, kConst}};
  c.forward = [params](const Tensors& in, const Alloc& alloc) {
    const LossSums s = ops::hybrid_loss_forward(in[0], in[1], params);
    Tensor loss = alloc({1}, in[0]), sums = alloc({4}, in[0]);
    loss.copy_from(Tensor::from_vector({1}, std::vector<double>{s.loss}, in[0].dtype()));
    sums.copy_from(
        Tensor::from_vector({4}, std::vector<double>{s.tp, s.fp, s.fn, s.bce_sum}, in[0].dtype()));
    return Tensors{loss, sums};
  };
  c.output_differentiable = {true, false};
  c.backward = [params](const Tensors& in, const Tensors&, const Tensors& dys, Tensors& grads,
                        bool accumulate, const Alloc&) {
    const LossSums s = ops::hybrid_loss_forward(in[0], in[1], params);
    const double dloss = dys[0].to_vector_f64()[0];
    ops::hybrid_loss_backward(in[0], in[1], params, s, dloss, grads[0], accumulate);
  };
  return c;
}

HybridLossParams loss_params(double bce_weight, double kappa) {
  HybridLossParams p;
  p.pos_weight = 3.0;  // not 1, so the weighting is exercised
  p.bce_weight = bce_weight;
  p.kappa = kappa;
  return p;
}

// ---------------------------------------------------------------- certainty of a prediction
// Forward only. Three images; with cutoff 0.7 some pixels of each fall on
// either side of it (probabilities are drawn from [0.05, 0.95]).
OpCase certainty_case(double cutoff) {
  OpCase c;
  c.name = "certainty index (cutoff " + std::to_string(cutoff).substr(0, 3) + ")";
  c.inputs = {{{3, 1, 7, 5}, Gen::Probability, kConst}};
  c.forward = [cutoff](const Tensors& in, const Alloc& alloc) {
    Tensor ci = alloc({3}, in[0]);
    ops::certainty_index(in[0], cutoff, ci);
    return Tensors{ci};
  };
  return c;  // no backward
}

// ---------------------------------------------------------------- optimizer
OpCase adam_case() {
  OpCase c;
  c.name = "adam (3 steps, decay)";
  c.inputs = {{{37}, Gen::Normal, kConst},
              {{37}, Gen::Normal, kConst},
              {{37}, Gen::Normal, kConst},
              {{37}, Gen::Positive, kConst}};
  c.forward = [](const Tensors& in, const Alloc& alloc) {
    AdamParams p;
    p.lr = 0.01;
    p.decay = 0.1;
    Tensor w = copy_of(in[0], alloc), m = copy_of(in[2], alloc), v = copy_of(in[3], alloc);
    for (int64_t step = 1; step <= 3; ++step) ops::adam_step(w, in[1], m, v, p, step);
    return Tensors{w, m, v};
  };
  return c;  // no backward
}

// ---------------------------------------------------------------- a composed block
// conv3x3 -> BN (train) -> ReLU -> channel scale -> + residual, the shape of a
// COVID-Rate encoder step, chained through the checked ops.
// Inputs: x, w, b, gamma, beta, running_mean, running_var, scale [N, C], residual.
OpCase block_case() {
  OpCase c;
  c.name = "block conv-bn-relu-scale-add";
  const Shape x{2, 3, 5, 5}, y{2, 4, 5, 5}, ch{4};
  c.inputs = {{x},
              {{4, 3, 3, 3}, Gen::Normal, kParam},
              {ch, Gen::Normal, kParam},
              {ch, Gen::Positive, kParam},
              {ch, Gen::Normal, kParam},
              {ch, Gen::Normal, kConst},
              {ch, Gen::Positive, kConst},
              {{2, 4}, Gen::Normal, kAct},
              {y, Gen::Normal, kAct}};
  const ConvParams p = ConvParams::same(3);
  // Outputs: the block's result, then what the backward needs: the conv output,
  // the ReLU output, and BN's saved mean and invstd.
  c.forward = [p, y](const Tensors& in, const Alloc& alloc) {
    const Tensor& ref = in[0];
    Tensor conv = alloc(y, ref), bn = alloc(y, ref), act = alloc(y, ref), scaled = alloc(y, ref),
           out = alloc(y, ref);
    Tensor mean = alloc(in[3].shape(), ref), invstd = alloc(in[3].shape(), ref);
    Tensor rm = copy_of(in[5], alloc), rv = copy_of(in[6], alloc);
    ops::conv2d_forward(in[0], in[1], &in[2], p, conv);
    ops::batchnorm_forward_train(conv, in[3], in[4], BatchNormParams{}, rm, rv, bn, mean, invstd);
    ops::relu_forward(bn, act);
    ops::mul_channel_forward(act, in[7], scaled);
    ops::add_forward(scaled, in[8], out);
    return Tensors{out, conv, act, mean, invstd};
  };
  c.output_differentiable = {true, false, false, false, false};
  c.backward = [p, y](const Tensors& in, const Tensors& out, const Tensors& dys, Tensors& grads,
                      bool accumulate, const Alloc& alloc) {
    const Tensor& dout = dys[0];
    Tensor d_act = alloc(y, dout), d_bn = alloc(y, dout), d_conv = alloc(y, dout);
    Tensor d_scale = alloc(in[7].shape(), dout);
    ops::add_into(dout, grads[8], accumulate);  // the residual
    // One flag covers both outputs of mul_channel_backward: overwrite the temporary
    // d_act, then add the scale's gradient with the caller's flag.
    ops::mul_channel_backward(dout, out[2], in[7], d_act, d_scale, false);
    ops::add_into(d_scale, grads[7], accumulate);
    ops::relu_backward(d_act, out[2], d_bn, false);
    ops::batchnorm_backward(d_bn, out[1], in[3], out[3], out[4], d_conv, grads[3], grads[4], false);
    ops::conv2d_backward_data(d_conv, in[1], p, grads[0], accumulate);
    ops::conv2d_backward_filter(d_conv, in[0], p, grads[1], &grads[2]);
  };
  c.parity_atol = 1e-4;
  return c;
}

std::vector<OpCase> build_cases() {
  std::vector<OpCase> cases;
  // Kernels 1/3/7, strides 1/2, and the dilations of COVID-Rate's context module.
  cases.push_back(conv_case(1, 1, 1, 5));
  cases.push_back(conv_case(1, 2, 1, 6));
  cases.push_back(conv_case(3, 1, 1, 6));
  cases.push_back(conv_case(3, 2, 1, 7));
  cases.push_back(conv_case(3, 1, 2, 7));
  cases.push_back(conv_case(3, 2, 2, 8));
  cases.push_back(conv_case(3, 1, 4, 9));
  cases.push_back(conv_case(3, 1, 8, 9));
  cases.push_back(conv_case(7, 1, 1, 8));
  cases.push_back(conv_case(7, 2, 1, 9));
  // The inference form's fused ReLU on the CUDA epilogue's two paths (f32 has
  // cuDNN's own bias add without it) and the CPU's two (Winograd, im2col).
  cases.push_back(conv_case(3, 1, 2, 7, /*relu=*/true));
  cases.push_back(conv_case(1, 1, 1, 5, /*relu=*/true));
  cases.push_back(conv_case(7, 2, 1, 9, /*relu=*/true));
  // The direct kernel's extremes: the stem's one input channel (7x7 -> 32, more
  // than 32 outputs' register tile below), one output channel (the head), and
  // 64 outputs at the 2048 multiply-add bound.
  cases.push_back(conv_case(7, 1, 1, 9, /*relu=*/true, {1, 33}));
  cases.push_back(conv_case(1, 1, 1, 5, false, {64, 1}));
  cases.push_back(conv_case(1, 2, 1, 6, /*relu=*/true, {32, 64}));
  // Past the bound: cuDNN, its bias epilogue and its fused ReLU.
  cases.push_back(conv_case(3, 1, 2, 7, false, {16, 16}));
  cases.push_back(conv_case(3, 2, 1, 7, /*relu=*/true, {16, 16}));
  cases.push_back(conv_case(1, 1, 1, 5, false, {48, 48}));
  // Batch 1 with an odd number of output pixels (49, 9, 49): the direct
  // kernel's short last group of pixels, as a study's last batch of one makes it.
  cases.push_back(conv_case(3, 1, 1, 7, false, {.batch = 1}));
  cases.push_back(conv_case(1, 2, 1, 5, /*relu=*/true, {.batch = 1}));
  cases.push_back(conv_case(7, 1, 1, 7, /*relu=*/true, {1, 33, 1}));
  // No bias: the direct kernel's and cuDNN's paths without one.
  cases.push_back(conv_case(3, 1, 1, 6, false, {.bias = false}));
  cases.push_back(conv_case(3, 1, 2, 7, /*relu=*/true, {16, 16, 1, false}));
  // The four-phase form's convolution: 2x2, padding 1, on a 5 x 6 map; 16
  // outputs in the direct kernel, 16 -> 64 in cuDNN.
  cases.push_back(conv_case(2, 1, 1, 5, false, {3, 16, 2, true, 1, 6}));
  cases.push_back(conv_case(2, 1, 1, 5, /*relu=*/true, {16, 64, 1, false, 1, 6}));
  cases.push_back(bn_train_case());
  cases.push_back(bn_infer_case());
  cases.push_back(relu_case());
  cases.push_back(sigmoid_case());
  cases.push_back(add_case());
  cases.push_back(mul_channel_case());
  cases.push_back(mul_pixel_case());
  cases.push_back(concat_case({2, 3}));
  cases.push_back(concat_case({2, 3, 1}));
  cases.push_back(upsample_case());
  cases.push_back(interleave_phases_case(false));
  cases.push_back(interleave_phases_case(true));
  cases.push_back(maxpool_case());
  cases.push_back(gap_case());
  cases.push_back(linear_case());
  cases.push_back(se_case());
  cases.push_back(loss_case("hybrid loss", loss_params(1.0, 1.0)));
  cases.push_back(loss_case("weighted BCE", loss_params(1.0, 0.0)));
  cases.push_back(loss_case("focal Tversky", loss_params(0.0, 1.0)));
  cases.push_back(certainty_case(0.3));
  cases.push_back(certainty_case(0.7));
  cases.push_back(adam_case());
  cases.push_back(block_case());
  return cases;
}

}  // namespace

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> cases = build_cases();
  return cases;
}

}  // namespace covidrate::test
