// Bad arguments to the non-convolution ops throw covidrate::Error, and the
// message names the op and the offending shapes, dtypes or devices.
// gpu_check: CPU only (its CUDA side is a program in tests/cuda).
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include "kernels/ops.h"

using namespace covidrate;

namespace {

Tensor f32(const Shape& s) { return Tensor::zeros(s, DType::F32); }
Tensor f64(const Shape& s) { return Tensor::zeros(s, DType::F64); }

// Runs fn, expects a covidrate::Error whose message contains every fragment.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& fragments) {
  std::string message;
  try {
    fn();
  } catch (const Error& e) {
    message = e.what();
  }
  INFO("message: \"" << message << "\"");
  REQUIRE_FALSE(message.empty());
  for (const std::string& f : fragments) {
    INFO("missing: \"" << f << "\"");
    CHECK(message.find(f) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("batch normalization rejects wrong channel counts and shapes") {
  Tensor x = f32({2, 3, 4, 4}), y = f32({2, 3, 4, 4}), c3 = f32({3}), c4 = f32({4});
  Tensor rm = f32({3}), rv = f32({3}), sm = f32({3}), si = f32({3});
  expect_error([&] { ops::batchnorm_forward_train(x, c4, c3, {}, rm, rv, y, sm, si); },
               {"batchnorm_forward_train", "gamma", "[4]", "[2, 3, 4, 4]"});
  Tensor wrong_y = f32({2, 3, 4, 5});
  expect_error([&] { ops::batchnorm_forward_infer(x, c3, c3, rm, rv, {}, wrong_y); },
               {"batchnorm_forward_infer", "[2, 3, 4, 5]", "[2, 3, 4, 4]"});
  Tensor single = f32({1, 3, 1, 1}), single_y = f32({1, 3, 1, 1});
  expect_error([&] { ops::batchnorm_forward_train(single, c3, c3, {}, rm, rv, single_y, sm, si); },
               {"batchnorm_forward_train", "more than one value", "[1, 3, 1, 1]"});
  Tensor dy = f32({2, 3, 2, 4}), dx = f32({2, 3, 4, 4}), dg = f32({3}), db = f32({3});
  expect_error([&] { ops::batchnorm_backward(dy, x, c3, sm, si, dx, dg, db, false); },
               {"batchnorm_backward", "dy", "[2, 3, 2, 4]", "[2, 3, 4, 4]"});
}

TEST_CASE("activations reject mismatched dtypes and shapes") {
  Tensor x = f32({2, 5}), y64 = f64({2, 5});
  expect_error([&] { ops::relu_forward(x, y64); }, {"relu_forward", "output", "f64", "f32"});
  Tensor dy = f32({2, 5}), y = f32({5, 2}), dx = f32({2, 5});
  expect_error([&] { ops::sigmoid_backward(dy, y, dx, false); },
               {"sigmoid_backward", "[5, 2]", "[2, 5]"});
  // bf16 runs the forward (inference), never the backward.
  Tensor half = Tensor::empty({2, 5}, DType::BF16), out = Tensor::empty({2, 5}, DType::BF16);
  expect_error([&] { ops::sigmoid_backward(half, half, out, false); },
               {"sigmoid_backward", "unsupported dtype bf16"});
}

TEST_CASE("elementwise ops reject mismatched shapes and scales") {
  Tensor a = f32({2, 3, 4, 4}), b = f32({2, 3, 4, 2}), y = f32({2, 3, 4, 4});
  expect_error([&] { ops::add_forward(a, b, y); },
               {"add_forward", "b", "[2, 3, 4, 2]", "[2, 3, 4, 4]"});
  Tensor s = f32({2, 4});
  expect_error([&] { ops::mul_channel_forward(a, s, y); },
               {"mul_channel_forward", "scale", "[2, 4]", "[2, 3, 4, 4]"});
  Tensor good_s = f32({2, 3}), dx = f32({2, 3, 4, 4}), ds = f32({3});
  expect_error([&] { ops::mul_channel_backward(a, a, good_s, dx, ds, false); },
               {"mul_channel_backward", "dscale", "[3]", "6 elements"});
  Tensor gate = f32({2, 3, 4, 4});
  expect_error([&] { ops::mul_pixel_forward(a, gate, y); },
               {"mul_pixel_forward", "gate", "[2, 3, 4, 4]", "[N, 1, H, W]"});
  Tensor good_gate = f32({2, 1, 4, 4}), dgate = f32({2, 1, 4, 2});
  expect_error([&] { ops::mul_pixel_backward(a, a, good_gate, dx, dgate, false); },
               {"mul_pixel_backward", "dgate", "[2, 1, 4, 2]"});
}

TEST_CASE("interleave_phases rejects phases that are not [N, 4C, H+1, W+1] and outputs of another size") {
  Tensor y = f32({2, 3, 6, 8});
  Tensor not_four = f32({2, 10, 4, 5});
  expect_error([&] { ops::interleave_phases_forward(not_four, nullptr, false, y); },
               {"interleave_phases_forward", "phases", "[2, 10, 4, 5]", "[N, 4C, H+1, W+1]"});
  Tensor z = f32({2, 12, 4, 5}), wrong = f32({2, 3, 8, 8});
  expect_error([&] { ops::interleave_phases_forward(z, nullptr, false, wrong); },
               {"interleave_phases_forward", "output", "[2, 3, 8, 8]"});
  Tensor bias = f32({4});
  expect_error([&] { ops::interleave_phases_forward(z, &bias, true, y); },
               {"interleave_phases_forward", "bias"});
  ops::interleave_phases_forward(z, nullptr, true, y);  // the right shapes pass
}

TEST_CASE("shape ops reject inconsistent sizes") {
  std::vector<Tensor> parts{f32({2, 2, 3, 3}), f32({2, 1, 3, 3})};
  Tensor y4 = f32({2, 4, 3, 3});
  expect_error([&] { ops::concat_channels_forward(parts, y4); },
               {"concat_channels_forward", "3 channels", "[2, 4, 3, 3]"});
  std::vector<Tensor> bad_parts{f32({2, 2, 3, 3}), f32({2, 2, 3, 4})};
  expect_error([&] { ops::concat_channels_backward(y4, bad_parts, false); },
               {"concat_channels_backward", "part 1", "[2, 2, 3, 4]", "[2, 4, 3, 3]"});
  expect_error([&] { ops::concat_channels_forward({}, y4); },
               {"concat_channels_forward", "no tensors"});

  Tensor x = f32({1, 2, 3, 5}), up = f32({1, 2, 6, 9});
  expect_error([&] { ops::upsample2x_forward(x, up); },
               {"upsample2x_forward", "[1, 2, 6, 9]", "[1, 2, 6, 10]"});
  Tensor pooled = f32({1, 2, 1, 2});
  expect_error([&] { ops::maxpool2x2_forward(x, pooled); },
               {"maxpool2x2_forward", "[1, 2, 3, 5]", "even"});
  Tensor gap = f32({1, 3});
  expect_error([&] { ops::global_avg_pool_forward(x, gap); },
               {"global_avg_pool_forward", "[1, 3]", "2 elements"});
  Tensor flat = f32({2, 6}), flat_y = f32({2, 2});
  expect_error([&] { ops::global_avg_pool_forward(flat, flat_y); },
               {"global_avg_pool_forward", "4-D", "[2, 6]"});
}

TEST_CASE("linear and squeeze-excitation reject wrong weight shapes") {
  Tensor x = f32({4, 6}), w = f32({5, 7}), y = f32({4, 5});
  expect_error([&] { ops::linear_forward(x, w, y); }, {"linear_forward", "[4, 6]", "[5, 7]"});
  Tensor w3 = f32({5, 6, 1});
  expect_error([&] { ops::linear_forward(x, w3, y); },
               {"linear_forward", "[5, 6, 1]", "[Out, In]"});

  Tensor sx = f32({2, 8, 3, 3}), w1 = f32({2, 6}), w2 = f32({8, 2}), sy = f32({2, 8, 3, 3});
  SeSaved saved{f32({2, 8}), f32({2, 2}), f32({2, 8})};
  expect_error([&] { ops::se_forward(sx, w1, w2, sy, saved); },
               {"se_forward", "w1", "[2, 6]", "8"});
  Tensor good_w1 = f32({2, 8}), bad_w2 = f32({8, 3});
  expect_error([&] { ops::se_forward(sx, good_w1, bad_w2, sy, saved); },
               {"se_forward", "w2", "[8, 3]", "[8, 2]"});
}

TEST_CASE("the hybrid loss rejects mismatched targets and bad parameters") {
  Tensor p = f32({2, 1, 4, 4}), y = f32({2, 1, 4, 3});
  expect_error([&] { ops::hybrid_loss_forward(p, y, {}); },
               {"hybrid_loss_forward", "target", "[2, 1, 4, 3]", "[2, 1, 4, 4]"});
  Tensor y64 = f64({2, 1, 4, 4});
  expect_error([&] { ops::hybrid_loss_forward(p, y64, {}); },
               {"hybrid_loss_forward", "f64", "f32"});
  HybridLossParams bad;
  bad.gamma = 0;
  Tensor good_y = f32({2, 1, 4, 4});
  expect_error([&] { ops::hybrid_loss_forward(p, good_y, bad); },
               {"hybrid_loss_forward", "gamma 0"});
  Tensor dp = f32({2, 1, 4});
  expect_error([&] { ops::hybrid_loss_backward(p, good_y, {}, LossSums{}, 1.0, dp, false); },
               {"hybrid_loss_backward", "dp", "[2, 1, 4]", "[2, 1, 4, 4]"});
}

TEST_CASE("adam rejects buffers of another size and step 0") {
  Tensor w = f32({10}), g = f32({10}), m = f32({9}), v = f32({10});
  expect_error([&] { ops::adam_step(w, g, m, v, {}, 1); }, {"adam_step", "[9]", "10 elements"});
  Tensor good_m = f32({10});
  expect_error([&] { ops::adam_step(w, g, good_m, v, {}, 0); }, {"adam_step", "step", "0"});
}

// Tensors on two devices, and dtypes a device lacks: tests/cuda/test_cuda_runtime.cpp.
