// Forward values of the CPU ops that the golden file does not cover, on inputs
// small enough to write the expected result by hand. (The gradient test checks
// each backward against its forward; this checks the forwards themselves.)
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/threads.h"
#include "kernels/ops.h"
#include "tests/support/test_support.h"

using namespace covidrate;

namespace {

Tensor t64(const Shape& s, const std::vector<double>& v) {
  return Tensor::from_vector(s, v, DType::F64);
}
Tensor out64(const Shape& s) { return Tensor::full(s, NAN, DType::F64); }

void expect_values(const Tensor& t, const std::vector<double>& want) {
  const std::vector<double> got = t.to_vector_f64();
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i);
    CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-12));
  }
}

}  // namespace

TEST_CASE("relu, sigmoid, add") {
  Tensor x = t64({4}, {-2, -0.5, 0, 3}), y = out64({4});
  ops::relu_forward(x, y);
  expect_values(y, {0, 0, 0, 3});
  ops::sigmoid_forward(x, y);
  expect_values(y,
                {1 / (1 + std::exp(2.0)), 1 / (1 + std::exp(0.5)), 0.5, 1 / (1 + std::exp(-3.0))});
  // Far tails stay finite and saturate instead of overflowing.
  Tensor big = Tensor::from_vector({2}, std::vector<float>{-100.0f, 100.0f}),
         big_y = Tensor::zeros({2});
  ops::sigmoid_forward(big, big_y);
  CHECK(big_y.to_vector()[0] >= 0.0f);
  CHECK(big_y.to_vector()[0] < 1e-40f);
  CHECK(big_y.to_vector()[1] == 1.0f);
  Tensor b = t64({4}, {1, 2, 3, 4});
  ops::add_forward(x, b, y);
  expect_values(y, {-1, 1.5, 3, 7});
}

TEST_CASE("mul_channel scales each (sample, channel) plane") {
  Tensor x = t64({2, 2, 1, 2}, {1, 2, 3, 4, 5, 6, 7, 8}), s = t64({2, 2}, {10, 100, -1, 0.5});
  Tensor y = out64({2, 2, 1, 2});
  ops::mul_channel_forward(x, s, y);
  expect_values(y, {10, 20, 300, 400, -5, -6, 3.5, 4});
}

TEST_CASE("mul_pixel scales every channel of a pixel by that pixel's gate") {
  Tensor x = t64({2, 2, 1, 2}, {1, 2, 3, 4, 5, 6, 7, 8}), a = t64({2, 1, 1, 2}, {10, -1, 0.5, 0});
  Tensor y = out64({2, 2, 1, 2});
  ops::mul_pixel_forward(x, a, y);
  expect_values(y, {10, -2, 30, -4, 2.5, 0, 3.5, 0});
  // The gate's gradient sums dy * x over the channels of its pixel.
  Tensor dy = t64({2, 2, 1, 2}, {1, 1, 1, 1, 2, 2, 2, 2}), dx = out64({2, 2, 1, 2}), da = out64({2, 1, 1, 2});
  ops::mul_pixel_backward(dy, x, a, dx, da, false);
  expect_values(da, {1 + 3, 2 + 4, 2 * 5 + 2 * 7, 2 * 6 + 2 * 8});
  expect_values(dx, {10, -1, 10, -1, 1, 0, 1, 0});
}

TEST_CASE("concat puts the parts' channels one after another per sample") {
  Tensor a = t64({2, 1, 1, 2}, {1, 2, 3, 4}), b = t64({2, 2, 1, 2}, {5, 6, 7, 8, 9, 10, 11, 12});
  Tensor y = out64({2, 3, 1, 2});
  ops::concat_channels_forward({a, b}, y);
  expect_values(y, {1, 2, 5, 6, 7, 8, 3, 4, 9, 10, 11, 12});
}

TEST_CASE("upsample2x repeats each pixel into a 2x2 block") {
  Tensor x = t64({1, 1, 2, 2}, {1, 2, 3, 4}), y = out64({1, 1, 4, 4});
  ops::upsample2x_forward(x, y);
  expect_values(y, {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4});
}

TEST_CASE("interleave_phases puts phase (a, b) at (2i+a, 2j+b), read one row and column further for a, b = 1") {
  // One image, C = 1, H = 1, W = 2: z is [1, 4, 2, 3]; phase p holds 10p + (its row * 3 + column).
  std::vector<double> z;
  for (int p = 0; p < 4; ++p)
    for (int k = 0; k < 6; ++k) z.push_back(10 * p + k);
  Tensor phases = t64({1, 4, 2, 3}, z), y = out64({1, 1, 2, 4});
  ops::interleave_phases_forward(phases, nullptr, false, y);
  // Row 0: phase 0 at (0, j), phase 1 at (0, j+1); row 1: phase 2 at (1, j), phase 3 at (1, j+1).
  expect_values(y, {0, 11, 1, 12, 23, 34, 24, 35});
  // The bias, then the ReLU (NaN becomes 0, as relu_forward).
  Tensor bias = t64({1}, {-12});
  z[0] = std::nan("");
  phases = t64({1, 4, 2, 3}, z);
  ops::interleave_phases_forward(phases, &bias, true, y);
  expect_values(y, {0, 0, 0, 0, 11, 22, 12, 23});
}

TEST_CASE("maxpool2x2 takes window maxima; ties go to the first in row-major order") {
  Tensor x = t64({1, 1, 2, 4}, {1, 5, 7, 7, 3, 2, 7, 7}), y = out64({1, 1, 1, 2});
  ops::maxpool2x2_forward(x, y);
  expect_values(y, {5, 7});
  Tensor dy = t64({1, 1, 1, 2}, {10, 20}), dx = out64({1, 1, 2, 4});
  ops::maxpool2x2_backward(dy, x, dx, false);
  expect_values(dx, {0, 10, 20, 0, 0, 0, 0, 0});
}

TEST_CASE("global average pooling and linear") {
  Tensor x = t64({1, 2, 1, 3}, {1, 2, 3, 10, 20, 30}), z = out64({1, 2});
  ops::global_avg_pool_forward(x, z);
  expect_values(z, {2, 20});
  Tensor w = t64({3, 2}, {1, 0, 0, 1, 1, -1}), y = out64({1, 3});
  ops::linear_forward(z, w, y);
  expect_values(y, {2, 20, -18});
}

TEST_CASE("batch norm inference uses the running statistics") {
  Tensor x = t64({1, 2, 1, 2}, {1, 3, 0, 4});
  Tensor gamma = t64({2}, {2, 1}), beta = t64({2}, {1, 0});
  Tensor mean = t64({2}, {1, 2}), var = t64({2}, {4, 1});
  BatchNormParams p;
  p.eps = 0;  // exact arithmetic for the check
  Tensor y = out64({1, 2, 1, 2});
  ops::batchnorm_forward_infer(x, gamma, beta, mean, var, p, y);
  expect_values(y, {1, 3, -2, 2});
}

TEST_CASE(
    "hybrid loss: a perfect prediction costs only the clamped BCE and has a finite gradient") {
  Tensor y = t64({1, 1, 1, 4}, {1, 0, 1, 0});
  Tensor p = y.clone();
  const LossSums s = ops::hybrid_loss_forward(p, y, HybridLossParams{});
  CHECK(s.tp == 2);
  CHECK(s.fp == 0);
  CHECK(s.fn == 0);
  CHECK(s.count == 4);
  CHECK(s.loss == doctest::Approx(-std::log(1 - 1e-7) * (2 * 2 + 2) / 4).epsilon(1e-6));
  Tensor dp = out64({1, 1, 1, 4});
  ops::hybrid_loss_backward(p, y, HybridLossParams{}, s, 1.0, dp, false);
  for (double g : dp.to_vector_f64()) CHECK(std::isfinite(g));
}

TEST_CASE("batch norm spread over threads equals one channel at a time, bit for bit") {
  // 4 channels of 256x256: large enough for the CPU kernel to use several threads.
  const int64_t channels = 4, h = 256, w = 256;
  const Tensor x = test::randn({1, channels, h, w}, 5), dy = test::randn({1, channels, h, w}, 6);
  const Tensor gamma = test::uniform({channels}, 7, 0.5, 1.5), beta = test::randn({channels}, 8);
  const BatchNormParams p;
  auto channel = [](const Tensor& t, int64_t c) {
    return t.reshape({t.c(), 1, t.h(), t.w()}).slice_batch(c, c + 1);
  };
  auto value = [](const Tensor& t, int64_t c) {
    return Tensor::full({1}, t.to_vector()[static_cast<size_t>(c)]);
  };

  Tensor rm = Tensor::zeros({channels}), rv = Tensor::full({channels}, 1.0);
  Tensor y = Tensor::zeros(x.shape()), mean = Tensor::zeros({channels}),
         invstd = Tensor::zeros({channels});
  ops::batchnorm_forward_train(x, gamma, beta, p, rm, rv, y, mean, invstd);
  Tensor dx = Tensor::zeros(x.shape()), dgamma = Tensor::zeros({channels}),
         dbeta = Tensor::zeros({channels});
  ops::batchnorm_backward(dy, x, gamma, mean, invstd, dx, dgamma, dbeta, false);

  MESSAGE("CPU threads: " << cpu::num_threads());
  for (int64_t c = 0; c < channels; ++c) {
    INFO("channel " << c);
    const Tensor xc = channel(x, c), dyc = channel(dy, c), gc = value(gamma, c),
                 bc = value(beta, c);
    Tensor rmc = Tensor::zeros({1}), rvc = Tensor::full({1}, 1.0);
    Tensor yc = Tensor::zeros(xc.shape()), mc = Tensor::zeros({1}), ic = Tensor::zeros({1});
    ops::batchnorm_forward_train(xc, gc, bc, p, rmc, rvc, yc, mc, ic);
    Tensor dxc = Tensor::zeros(xc.shape()), dgc = Tensor::zeros({1}), dbc = Tensor::zeros({1});
    ops::batchnorm_backward(dyc, xc, gc, mc, ic, dxc, dgc, dbc, false);
    CHECK(yc.to_vector() == channel(y, c).to_vector());
    CHECK(dxc.to_vector() == channel(dx, c).to_vector());
    CHECK(rmc.to_vector() == value(rm, c).to_vector());
    CHECK(rvc.to_vector() == value(rv, c).to_vector());
    CHECK(dgc.to_vector() == value(dgamma, c).to_vector());
    CHECK(dbc.to_vector() == value(dbeta, c).to_vector());
  }
}

TEST_CASE("certainty index: the mean probability above the cut-off, per image; 0 when none is above") {
  // Image 0: above 0.3 are 0.9, 0.5 and 0.31 -> (0.9 + 0.5 + 0.31) / 3; 0.3 itself is not above.
  // Image 1: nothing above -> 0. Image 2: NaN is not counted -> 0.8.
  Tensor p = t64({3, 1, 2, 3}, {0.9, 0.5, 0.3, 0.31, 0.0, 0.1,  //
                                0.3, 0.2, 0.0, 0.1, 0.25, 0.29,  //
                                NAN, 0.8, 0.0, 0.0, 0.0, 0.0});
  Tensor ci = out64({3});
  ops::certainty_index(p, 0.3, ci);
  expect_values(ci, {(0.9 + 0.5 + 0.31) / 3, 0.0, 0.8});
  // Float32 and the thread split give the same values.
  Tensor pf = p.to(DType::F32), cif = Tensor::full({3}, NAN, DType::F32);
  ops::certainty_index(pf, 0.3, cif);
  CHECK(cif.to_vector()[0] == doctest::Approx((0.9 + 0.5 + 0.31) / 3).epsilon(1e-6));
  CHECK(cif.to_vector()[1] == 0.f);
  // Wrong shapes and cut-offs are refused with the op's name.
  Tensor wrong = out64({2});
  CHECK_THROWS_WITH_AS(ops::certainty_index(p, 0.3, wrong), doctest::Contains("certainty_index"), Error);
  CHECK_THROWS_WITH_AS(ops::certainty_index(p, 1.0, ci), doctest::Contains("cutoff"), Error);
}
