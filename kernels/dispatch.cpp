// The checked entry points of every op: validate shapes, dtypes and devices with
// a message that names the op and the shapes, then one line that runs the twin
// of the tensors' device (timed per op when profiling, kernels/op_profile.h).
#include <algorithm>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/op_profile.h"
#include "kernels/ops.h"
#if COVIDRATE_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#define ON_DEVICE(t, call)                          \
  do {                                              \
    const profile::OpScope op_scope_(__func__, t);  \
    if ((t).is_cuda()) {                            \
      cuda::call;                                   \
    } else {                                        \
      cpu::call;                                    \
    }                                               \
  } while (0)
#define ON_DEVICE_RETURN(t, call)                 \
  const profile::OpScope op_scope_(__func__, t); \
  return (t).is_cuda() ? cuda::call : cpu::call
#else
#define ON_DEVICE(t, call)                          \
  do {                                              \
    const profile::OpScope op_scope_(__func__, t);  \
    cpu::call;                                      \
  } while (0)
#define ON_DEVICE_RETURN(t, call)                 \
  const profile::OpScope op_scope_(__func__, t); \
  return cpu::call
#endif

namespace covidrate {

int64_t conv_out_size(int64_t in, int kernel, const ConvParams& p) {
  return (in + 2 * p.pad - static_cast<int64_t>(p.dilation) * (kernel - 1) - 1) / p.stride + 1;
}

Shape conv2d_out_shape(const Shape& x, const Shape& w, const ConvParams& p) {
  CR_CHECK(x.rank() == 4 && w.rank() == 4,
           "conv2d: input " << x.str() << " and weight " << w.str() << " must both be 4-D");
  CR_CHECK(x.c() == w.c(), "conv2d: input " << x.str() << " has " << x.c() << " channels, weight "
                                            << w.str() << " expects " << w.c());
  CR_CHECK(p.stride >= 1 && p.dilation >= 1 && p.pad >= 0,
           "conv2d: stride " << p.stride << ", dilation " << p.dilation << ", pad " << p.pad
                             << " (stride and dilation must be >= 1, pad >= 0)");
  const int64_t kh = w.h(), kw = w.w();
  const int64_t eff_h = p.dilation * (kh - 1) + 1, eff_w = p.dilation * (kw - 1) + 1;
  CR_CHECK(x.h() + 2 * p.pad >= eff_h && x.w() + 2 * p.pad >= eff_w,
           "conv2d: kernel " << kh << "x" << kw << " with dilation " << p.dilation << " spans "
                             << eff_h << "x" << eff_w << ", larger than the padded input "
                             << x.str() << " (pad " << p.pad << ")");
  return Shape{x.n(), w.n(), conv_out_size(x.h(), static_cast<int>(kh), p),
               conv_out_size(x.w(), static_cast<int>(kw), p)};
}

namespace {

const char* dev(const Tensor& t) { return to_string(t.device()); }

void check_defined(const char* op, const char* name, const Tensor& t) {
  CR_CHECK(t.defined(), op << ": " << name << " is undefined");
}
// Same device and same dtype as the reference tensor, which must be F32 (or F64 on the CPU).
void check_like(const char* op, const char* name, const Tensor& t, const Tensor& ref) {
  check_defined(op, name, t);
  CR_CHECK(t.device() == ref.device(), op << ": " << name << " " << t.str() << " is on " << dev(t)
                                          << ", other arguments on " << dev(ref));
  CR_CHECK(t.dtype() == ref.dtype(), op << ": " << name << " " << t.str() << " has dtype "
                                        << to_string(t.dtype()) << ", expected "
                                        << to_string(ref.dtype()));
}
void check_float(const char* op, const Tensor& t) {
  check_defined(op, "input", t);
  const bool ok = t.dtype() == DType::F32 || (t.dtype() == DType::F64 && !t.is_cuda());
  CR_CHECK(ok, op << ": unsupported dtype " << to_string(t.dtype()) << " on " << dev(t));
}
// The forward ops of inference also take BF16, on both devices; every tensor
// of one call then is BF16 (check_like), only cast mixes dtypes. Numerics:
// bf16 is the STORAGE format, arithmetic and accumulation are float32
// everywhere. The CPU twin is the reference: it widens the inputs to f32,
// runs the f32 code and rounds the result once, to nearest even
// (kernels/cpu/bf16_reference.h). The CUDA twins load bf16, compute in f32
// and store with the same rounding; cuDNN runs bf16 tensors and filters with
// a float compute type. They differ from the reference only in the order of
// the f32 sums (see tests/cuda/test_cuda_parity.cpp for the tolerances).
void check_forward_float(const char* op, const Tensor& t) {
  check_defined(op, "input", t);
  if (t.dtype() == DType::BF16) return;
  CR_CHECK(t.dtype() != DType::F16, op << ": f16 tensors are storage only (cast them to f32 or bf16), got "
                                       << t.str());
  check_float(op, t);
}
void check_shape(const char* op, const char* name, const Tensor& t, const Shape& want) {
  CR_CHECK(t.shape() == want, op << ": " << name << " has shape " << t.shape().str()
                                 << ", expected " << want.str());
}
void check_numel(const char* op, const char* name, const Tensor& t, int64_t want) {
  CR_CHECK(t.numel() == want,
           op << ": " << name << " " << t.shape().str() << " must have " << want << " elements");
}
void check_rank4(const char* op, const char* name, const Tensor& t) {
  CR_CHECK(t.shape().rank() == 4, op << ": " << name << " must be 4-D NCHW, got " << t.shape().str());
}

}  // namespace

namespace ops {

// ---------------------------------------------------------------- memory
void fill(Tensor& y, double value) {
  check_forward_float("fill", y);
  ON_DEVICE(y, fill(y, value));
}

void add_into(const Tensor& src, Tensor& dst, bool accumulate) {
  check_float("add_into", src);
  check_like("add_into", "dst", dst, src);
  check_numel("add_into", "dst", dst, src.numel());
  ON_DEVICE(src, add_into(src, dst, accumulate));
}

void axpy(double alpha, const Tensor& x, Tensor& y) {
  check_float("axpy", x);
  check_like("axpy", "y", y, x);
  check_numel("axpy", "y", y, x.numel());
  ON_DEVICE(x, axpy(alpha, x, y));
}

void cast(const Tensor& x, Tensor& y) {
  check_defined("cast", "input", x);
  check_defined("cast", "output", y);
  CR_CHECK(y.device() == x.device(), "cast: output " << y.str() << " is on " << dev(y) << ", input on " << dev(x));
  check_shape("cast", "output", y, x.shape());
  const auto is_16_bit = [](DType t) { return t == DType::BF16 || t == DType::F16; };
  CR_CHECK((x.dtype() == DType::F32 && is_16_bit(y.dtype())) || (is_16_bit(x.dtype()) && y.dtype() == DType::F32),
           "cast: converts f32 to bf16/f16 and back, not " << to_string(x.dtype()) << " to "
                                                           << to_string(y.dtype()));
  ON_DEVICE(x, cast(x, y));
}

// ---------------------------------------------------------------- convolution
void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const ConvParams& p,
                    Tensor& y) {
  check_forward_float("conv2d_forward", x);
  check_like("conv2d_forward", "weight", w, x);
  const Shape out = conv2d_out_shape(x.shape(), w.shape(), p);
  if (bias) {
    check_like("conv2d_forward", "bias", *bias, x);
    check_numel("conv2d_forward", "bias", *bias, w.n());
  }
  check_like("conv2d_forward", "output", y, x);
  check_shape("conv2d_forward", "output", y, out);
  ON_DEVICE(x, conv2d_forward(x, w, bias, p, y));
}

void conv2d_backward_data(const Tensor& dy, const Tensor& w, const ConvParams& p, Tensor& dx,
                          bool accumulate) {
  check_float("conv2d_backward_data", dy);
  CR_CHECK(!p.relu, "conv2d_backward_data: a convolution with its ReLU fused (ConvParams::relu) is forward only");
  CR_CHECK(!p.inference, "conv2d_backward_data: a convolution computed for inference (ConvParams::inference) is forward only");
  check_like("conv2d_backward_data", "weight", w, dy);
  check_like("conv2d_backward_data", "dx", dx, dy);
  check_shape("conv2d_backward_data", "dy", dy, conv2d_out_shape(dx.shape(), w.shape(), p));
  ON_DEVICE(dy, conv2d_backward_data(dy, w, p, dx, accumulate));
}

void conv2d_backward_filter(const Tensor& dy, const Tensor& x, const ConvParams& p, Tensor& dw,
                            Tensor* dbias) {
  check_float("conv2d_backward_filter", dy);
  CR_CHECK(!p.relu, "conv2d_backward_filter: a convolution with its ReLU fused (ConvParams::relu) is forward only");
  CR_CHECK(!p.inference,
           "conv2d_backward_filter: a convolution computed for inference (ConvParams::inference) is forward only");
  check_like("conv2d_backward_filter", "x", x, dy);
  check_like("conv2d_backward_filter", "dw", dw, dy);
  check_shape("conv2d_backward_filter", "dy", dy, conv2d_out_shape(x.shape(), dw.shape(), p));
  if (dbias) {
    check_like("conv2d_backward_filter", "dbias", *dbias, dy);
    check_numel("conv2d_backward_filter", "dbias", *dbias, dw.n());
  }
  ON_DEVICE(dy, conv2d_backward_filter(dy, x, p, dw, dbias));
}

// ---------------------------------------------------------------- batch normalization
namespace {
void check_bn_channel(const char* op, const char* name, const Tensor& t, const Tensor& x) {
  check_like(op, name, t, x);
  CR_CHECK(t.numel() == x.c(), op << ": " << name << " " << t.shape().str() << " must have one value per channel of "
                                  << x.shape().str() << " (" << x.c() << ")");
}
}  // namespace

void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const BatchNormParams& p, Tensor& running_mean, Tensor& running_var,
                             Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  const char* op = "batchnorm_forward_train";
  check_float(op, x);
  check_rank4(op, "input", x);
  CR_CHECK(x.n() * x.h() * x.w() > 1, op << ": needs more than one value per channel, got " << x.shape().str());
  check_bn_channel(op, "gamma", gamma, x);
  check_bn_channel(op, "beta", beta, x);
  check_bn_channel(op, "running_mean", running_mean, x);
  check_bn_channel(op, "running_var", running_var, x);
  check_bn_channel(op, "save_mean", save_mean, x);
  check_bn_channel(op, "save_invstd", save_invstd, x);
  check_like(op, "output", y, x);
  check_shape(op, "output", y, x.shape());
  ON_DEVICE(x, batchnorm_forward_train(x, gamma, beta, p, running_mean, running_var, y, save_mean,
                                       save_invstd));
}

void batchnorm_forward_infer(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var,
                             const BatchNormParams& p, Tensor& y) {
  const char* op = "batchnorm_forward_infer";
  check_float(op, x);
  check_rank4(op, "input", x);
  check_bn_channel(op, "gamma", gamma, x);
  check_bn_channel(op, "beta", beta, x);
  check_bn_channel(op, "running_mean", running_mean, x);
  check_bn_channel(op, "running_var", running_var, x);
  check_like(op, "output", y, x);
  check_shape(op, "output", y, x.shape());
  ON_DEVICE(x, batchnorm_forward_infer(x, gamma, beta, running_mean, running_var, p, y));
}

void batchnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma,
                        const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx,
                        Tensor& dgamma, Tensor& dbeta, bool accumulate) {
  const char* op = "batchnorm_backward";
  check_float(op, x);
  check_rank4(op, "input", x);
  check_like(op, "dy", dy, x);
  check_shape(op, "dy", dy, x.shape());
  check_like(op, "dx", dx, x);
  check_shape(op, "dx", dx, x.shape());
  check_bn_channel(op, "gamma", gamma, x);
  check_bn_channel(op, "save_mean", save_mean, x);
  check_bn_channel(op, "save_invstd", save_invstd, x);
  check_bn_channel(op, "dgamma", dgamma, x);
  check_bn_channel(op, "dbeta", dbeta, x);
  ON_DEVICE(x, batchnorm_backward(dy, x, gamma, save_mean, save_invstd, dx, dgamma, dbeta,
                                  accumulate));
}

// ---------------------------------------------------------------- activations
namespace {
void check_unary(const char* op, const Tensor& x, const Tensor& y) {
  check_forward_float(op, x);
  check_like(op, "output", y, x);
  check_shape(op, "output", y, x.shape());
}
void check_unary_backward(const char* op, const Tensor& dy, const Tensor& y, const Tensor& dx) {
  check_float(op, dy);
  check_like(op, "y", y, dy);
  check_shape(op, "y", y, dy.shape());
  check_like(op, "dx", dx, dy);
  check_shape(op, "dx", dx, dy.shape());
}
}  // namespace

void relu_forward(const Tensor& x, Tensor& y) {
  check_unary("relu_forward", x, y);
  ON_DEVICE(x, relu_forward(x, y));
}
void relu_backward(const Tensor& dy, const Tensor& y, Tensor& dx, bool accumulate) {
  check_unary_backward("relu_backward", dy, y, dx);
  ON_DEVICE(dy, relu_backward(dy, y, dx, accumulate));
}
void sigmoid_forward(const Tensor& x, Tensor& y) {
  check_unary("sigmoid_forward", x, y);
  ON_DEVICE(x, sigmoid_forward(x, y));
}
void sigmoid_backward(const Tensor& dy, const Tensor& y, Tensor& dx, bool accumulate) {
  check_unary_backward("sigmoid_backward", dy, y, dx);
  ON_DEVICE(dy, sigmoid_backward(dy, y, dx, accumulate));
}

// ---------------------------------------------------------------- elementwise
void add_forward(const Tensor& a, const Tensor& b, Tensor& y) {
  check_forward_float("add_forward", a);
  check_like("add_forward", "b", b, a);
  check_shape("add_forward", "b", b, a.shape());
  check_like("add_forward", "output", y, a);
  check_shape("add_forward", "output", y, a.shape());
  ON_DEVICE(a, add_forward(a, b, y));
}

void mul_channel_forward(const Tensor& x, const Tensor& s, Tensor& y) {
  check_forward_float("mul_channel_forward", x);
  check_like("mul_channel_forward", "scale", s, x);
  CR_CHECK(s.n() == x.n() && s.c() == x.c() && s.numel() == x.n() * x.c(),
           "mul_channel_forward: scale " << s.shape().str() << " must be [N, C] of input "
                                         << x.shape().str());
  check_like("mul_channel_forward", "output", y, x);
  check_shape("mul_channel_forward", "output", y, x.shape());
  ON_DEVICE(x, mul_channel_forward(x, s, y));
}

void mul_channel_backward(const Tensor& dy, const Tensor& x, const Tensor& s, Tensor& dx,
                          Tensor& ds, bool accumulate) {
  const char* op = "mul_channel_backward";
  check_float(op, x);
  check_like(op, "dy", dy, x);
  check_shape(op, "dy", dy, x.shape());
  check_like(op, "scale", s, x);
  check_numel(op, "scale", s, x.n() * x.c());
  check_like(op, "dx", dx, x);
  check_shape(op, "dx", dx, x.shape());
  check_like(op, "dscale", ds, x);
  check_numel(op, "dscale", ds, x.n() * x.c());
  ON_DEVICE(x, mul_channel_backward(dy, x, s, dx, ds, accumulate));
}

void mul_pixel_forward(const Tensor& x, const Tensor& a, Tensor& y) {
  check_forward_float("mul_pixel_forward", x);
  check_like("mul_pixel_forward", "gate", a, x);
  CR_CHECK(a.shape() == (Shape{x.n(), 1, x.h(), x.w()}),
           "mul_pixel_forward: gate " << a.shape().str() << " must be [N, 1, H, W] of input " << x.shape().str());
  check_like("mul_pixel_forward", "output", y, x);
  check_shape("mul_pixel_forward", "output", y, x.shape());
  ON_DEVICE(x, mul_pixel_forward(x, a, y));
}

void mul_pixel_backward(const Tensor& dy, const Tensor& x, const Tensor& a, Tensor& dx,
                        Tensor& da, bool accumulate) {
  const char* op = "mul_pixel_backward";
  check_float(op, x);
  check_like(op, "dy", dy, x);
  check_shape(op, "dy", dy, x.shape());
  check_like(op, "gate", a, x);
  check_shape(op, "gate", a, Shape{x.n(), 1, x.h(), x.w()});
  check_like(op, "dx", dx, x);
  check_shape(op, "dx", dx, x.shape());
  check_like(op, "dgate", da, x);
  check_shape(op, "dgate", da, Shape{x.n(), 1, x.h(), x.w()});
  ON_DEVICE(x, mul_pixel_backward(dy, x, a, dx, da, accumulate));
}

// ---------------------------------------------------------------- shape ops
namespace {
void check_concat(const char* op, const std::vector<Tensor>& xs, const Tensor& y, bool forward) {
  CR_CHECK(!xs.empty(), op << ": no tensors to concatenate");
  if (forward) {
    check_forward_float(op, y);
  } else {
    check_float(op, y);
  }
  check_rank4(op, "output", y);
  int64_t channels = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    check_like(op, "part", xs[i], y);
    CR_CHECK(xs[i].shape().rank() == 4 && xs[i].n() == y.n() && xs[i].h() == y.h() &&
                 xs[i].w() == y.w(),
             op << ": part " << i << " " << xs[i].shape().str()
                << " does not match the batch and spatial size of " << y.shape().str());
    channels += xs[i].c();
  }
  CR_CHECK(channels == y.c(), op << ": parts have " << channels << " channels in all, output "
                                 << y.shape().str() << " has " << y.c());
}
}  // namespace

void concat_channels_forward(const std::vector<Tensor>& xs, Tensor& y) {
  check_concat("concat_channels_forward", xs, y, /*forward=*/true);
  ON_DEVICE(y, concat_channels_forward(xs, y));
}
void concat_channels_backward(const Tensor& dy, std::vector<Tensor>& dxs, bool accumulate) {
  check_concat("concat_channels_backward", dxs, dy, /*forward=*/false);
  ON_DEVICE(dy, concat_channels_backward(dy, dxs, accumulate));
}

void upsample2x_forward(const Tensor& x, Tensor& y) {
  check_forward_float("upsample2x_forward", x);
  check_rank4("upsample2x_forward", "input", x);
  check_like("upsample2x_forward", "output", y, x);
  check_shape("upsample2x_forward", "output", y, Shape{x.n(), x.c(), 2 * x.h(), 2 * x.w()});
  ON_DEVICE(x, upsample2x_forward(x, y));
}
void interleave_phases_forward(const Tensor& z, const Tensor* bias, bool relu, Tensor& y) {
  const char* op = "interleave_phases_forward";
  check_forward_float(op, z);
  check_rank4(op, "phases", z);
  CR_CHECK(z.c() % 4 == 0 && z.h() >= 2 && z.w() >= 2,
           op << ": phases " << z.shape().str() << " must be [N, 4C, H+1, W+1] with H, W >= 1");
  const int64_t channels = z.c() / 4;
  if (bias) {
    check_like(op, "bias", *bias, z);
    check_numel(op, "bias", *bias, channels);
  }
  check_like(op, "output", y, z);
  check_shape(op, "output", y, Shape{z.n(), channels, 2 * (z.h() - 1), 2 * (z.w() - 1)});
  ON_DEVICE(z, interleave_phases_forward(z, bias, relu, y));
}
void upsample2x_backward(const Tensor& dy, Tensor& dx, bool accumulate) {
  check_float("upsample2x_backward", dy);
  check_rank4("upsample2x_backward", "dx", dx);
  check_like("upsample2x_backward", "dx", dx, dy);
  check_shape("upsample2x_backward", "dy", dy, Shape{dx.n(), dx.c(), 2 * dx.h(), 2 * dx.w()});
  ON_DEVICE(dy, upsample2x_backward(dy, dx, accumulate));
}

void maxpool2x2_forward(const Tensor& x, Tensor& y) {
  check_forward_float("maxpool2x2_forward", x);
  check_rank4("maxpool2x2_forward", "input", x);
  CR_CHECK(x.h() % 2 == 0 && x.w() % 2 == 0,
           "maxpool2x2_forward: input " << x.shape().str() << " needs even height and width");
  check_like("maxpool2x2_forward", "output", y, x);
  check_shape("maxpool2x2_forward", "output", y, Shape{x.n(), x.c(), x.h() / 2, x.w() / 2});
  ON_DEVICE(x, maxpool2x2_forward(x, y));
}
void maxpool2x2_backward(const Tensor& dy, const Tensor& x, Tensor& dx, bool accumulate) {
  check_float("maxpool2x2_backward", x);
  check_rank4("maxpool2x2_backward", "input", x);
  CR_CHECK(x.h() % 2 == 0 && x.w() % 2 == 0,
           "maxpool2x2_backward: input " << x.shape().str() << " needs even height and width");
  check_like("maxpool2x2_backward", "dy", dy, x);
  check_shape("maxpool2x2_backward", "dy", dy, Shape{x.n(), x.c(), x.h() / 2, x.w() / 2});
  check_like("maxpool2x2_backward", "dx", dx, x);
  check_shape("maxpool2x2_backward", "dx", dx, x.shape());
  ON_DEVICE(x, maxpool2x2_backward(dy, x, dx, accumulate));
}

void global_avg_pool_forward(const Tensor& x, Tensor& y) {
  check_forward_float("global_avg_pool_forward", x);
  check_rank4("global_avg_pool_forward", "input", x);
  check_like("global_avg_pool_forward", "output", y, x);
  check_numel("global_avg_pool_forward", "output", y, x.n() * x.c());
  ON_DEVICE(x, global_avg_pool_forward(x, y));
}
void global_avg_pool_backward(const Tensor& dy, Tensor& dx, bool accumulate) {
  check_float("global_avg_pool_backward", dy);
  check_rank4("global_avg_pool_backward", "dx", dx);
  check_like("global_avg_pool_backward", "dx", dx, dy);
  check_numel("global_avg_pool_backward", "dy", dy, dx.n() * dx.c());
  ON_DEVICE(dy, global_avg_pool_backward(dy, dx, accumulate));
}

// ---------------------------------------------------------------- fully connected
void linear_forward(const Tensor& x, const Tensor& w, Tensor& y) {
  check_forward_float("linear_forward", x);
  check_like("linear_forward", "weight", w, x);
  CR_CHECK(w.shape().rank() == 2, "linear_forward: weight " << w.shape().str() << " must be [Out, In]");
  CR_CHECK(x.numel() == x.n() * w.c(), "linear_forward: input " << x.shape().str()
                                                                << " does not have In = " << w.c()
                                                                << " features per row for weight "
                                                                << w.shape().str());
  check_like("linear_forward", "output", y, x);
  check_numel("linear_forward", "output", y, x.n() * w.n());
  ON_DEVICE(x, linear_forward(x, w, y));
}
void linear_backward_data(const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate) {
  check_float("linear_backward_data", dy);
  check_like("linear_backward_data", "weight", w, dy);
  CR_CHECK(w.shape().rank() == 2, "linear_backward_data: weight " << w.shape().str() << " must be [Out, In]");
  check_like("linear_backward_data", "dx", dx, dy);
  check_numel("linear_backward_data", "dy", dy, dx.n() * w.n());
  check_numel("linear_backward_data", "dx", dx, dx.n() * w.c());
  ON_DEVICE(dy, linear_backward_data(dy, w, dx, accumulate));
}
void linear_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw) {
  check_float("linear_backward_weight", dy);
  check_like("linear_backward_weight", "x", x, dy);
  check_like("linear_backward_weight", "dw", dw, dy);
  CR_CHECK(dw.shape().rank() == 2, "linear_backward_weight: dw " << dw.shape().str() << " must be [Out, In]");
  check_numel("linear_backward_weight", "dy", dy, x.n() * dw.n());
  check_numel("linear_backward_weight", "x", x, x.n() * dw.c());
  ON_DEVICE(dy, linear_backward_weight(dy, x, dw));
}

// ---------------------------------------------------------------- squeeze-and-excitation
namespace {
void check_se(const char* op, const Tensor& x, const Tensor& w1, const Tensor& w2, bool forward) {
  if (forward) {
    check_forward_float(op, x);
  } else {
    check_float(op, x);
  }
  check_rank4(op, "input", x);
  check_like(op, "w1", w1, x);
  check_like(op, "w2", w2, x);
  CR_CHECK(w1.shape().rank() == 2 && w1.c() == x.c(),
           op << ": w1 " << w1.shape().str() << " must be [C/r, " << x.c() << "] for input " << x.shape().str());
  CR_CHECK(w2.shape() == (Shape{x.c(), w1.n()}),
           op << ": w2 " << w2.shape().str() << " must be [" << x.c() << ", " << w1.n() << "]");
}
}  // namespace

void se_forward(const Tensor& x, const Tensor& w1, const Tensor& w2, Tensor& y, SeSaved& saved) {
  const char* op = "se_forward";
  check_se(op, x, w1, w2, /*forward=*/true);
  check_like(op, "output", y, x);
  check_shape(op, "output", y, x.shape());
  check_like(op, "saved.pooled", saved.pooled, x);
  check_numel(op, "saved.pooled", saved.pooled, x.n() * x.c());
  check_like(op, "saved.hidden", saved.hidden, x);
  check_numel(op, "saved.hidden", saved.hidden, x.n() * w1.n());
  check_like(op, "saved.scale", saved.scale, x);
  check_numel(op, "saved.scale", saved.scale, x.n() * x.c());
  ON_DEVICE(x, se_forward(x, w1, w2, y, saved));
}

void se_backward(const Tensor& dy, const Tensor& x, const Tensor& w1, const Tensor& w2,
                 const SeSaved& saved, Tensor& dx, Tensor& dw1, Tensor& dw2, bool accumulate) {
  const char* op = "se_backward";
  check_se(op, x, w1, w2, /*forward=*/false);
  check_like(op, "dy", dy, x);
  check_shape(op, "dy", dy, x.shape());
  check_like(op, "dx", dx, x);
  check_shape(op, "dx", dx, x.shape());
  check_like(op, "dw1", dw1, x);
  check_shape(op, "dw1", dw1, w1.shape());
  check_like(op, "dw2", dw2, x);
  check_shape(op, "dw2", dw2, w2.shape());
  check_numel(op, "saved.pooled", saved.pooled, x.n() * x.c());
  check_numel(op, "saved.hidden", saved.hidden, x.n() * w1.n());
  check_numel(op, "saved.scale", saved.scale, x.n() * x.c());
  ON_DEVICE(x, se_backward(dy, x, w1, w2, saved, dx, dw1, dw2, accumulate));
}

// ---------------------------------------------------------------- loss
namespace {
void check_loss(const char* op, const Tensor& p, const Tensor& y, const HybridLossParams& params) {
  check_float(op, p);
  check_like(op, "target", y, p);
  check_shape(op, "target", y, p.shape());
  CR_CHECK(p.numel() > 0, op << ": empty prediction " << p.shape().str());
  CR_CHECK(params.gamma > 0 && params.smooth >= 0 && params.eps > 0 && params.eps < 0.5,
           op << ": gamma " << params.gamma << ", smooth " << params.smooth << ", eps " << params.eps
              << " (need gamma > 0, smooth >= 0, 0 < eps < 0.5)");
}
}  // namespace

LossSums hybrid_loss_forward(const Tensor& p, const Tensor& y, const HybridLossParams& params) {
  check_loss("hybrid_loss_forward", p, y, params);
  ON_DEVICE_RETURN(p, hybrid_loss_forward(p, y, params));
}

void hybrid_loss_backward(const Tensor& p, const Tensor& y, const HybridLossParams& params,
                          const LossSums& sums, double dloss, Tensor& dp, bool accumulate) {
  check_loss("hybrid_loss_backward", p, y, params);
  check_like("hybrid_loss_backward", "dp", dp, p);
  check_shape("hybrid_loss_backward", "dp", dp, p.shape());
  ON_DEVICE(p, hybrid_loss_backward(p, y, params, sums, dloss, dp, accumulate));
}

// ---------------------------------------------------------------- certainty of a prediction
void certainty_index(const Tensor& p, double cutoff, Tensor& ci) {
  const char* op = "certainty_index";
  check_float(op, p);
  check_like(op, "ci", ci, p);
  CR_CHECK(p.shape().rank() >= 1 && p.shape()[0] > 0 && p.numel() > 0,
           op << ": p must hold at least one image, got " << p.shape().str());
  check_shape(op, "ci", ci, Shape{p.shape()[0]});
  CR_CHECK(cutoff >= 0 && cutoff < 1, op << ": cutoff must be in [0, 1), got " << cutoff);
  ON_DEVICE(p, certainty_index(p, cutoff, ci));
}

// ---------------------------------------------------------------- optimizer
void adam_step(Tensor& params, const Tensor& grads, Tensor& m, Tensor& v, const AdamParams& p,
               int64_t step) {
  const char* op = "adam_step";
  check_float(op, params);
  for (const Tensor* t : {&grads, static_cast<const Tensor*>(&m), static_cast<const Tensor*>(&v)}) {
    check_like(op, "buffer", *t, params);
    check_numel(op, "buffer", *t, params.numel());
  }
  CR_CHECK(step >= 1, op << ": step counts from 1, got " << step);
  ON_DEVICE(params, adam_step(params, grads, m, v, p, step));
}

}  // namespace ops
}  // namespace covidrate
