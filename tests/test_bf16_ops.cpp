// The bfloat16 forward ops on the CPU, which are the reference for the CUDA
// twins: each must equal the f32 op run on the bf16 values, rounded once to
// nearest even. The expected values are computed here through Tensor::to (its
// own conversion loop), not through the ops' helper, and compared bit for bit.
// Also: the cast op (round trips, ties, NaN/Inf) and the dtype checks.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "nn/half.h"
#include "tests/support/test_support.h"

using namespace covidrate;

namespace {

using Op = std::function<std::vector<Tensor>(const std::vector<Tensor>& in, DType dtype)>;

Tensor out(const Shape& s, DType dtype) { return Tensor::full(s, NAN, dtype); }

// Distance of two bf16 bit patterns in units in the last place (same sign assumed
// for finite values; a sign or finiteness difference counts as "far").
int64_t ulp_distance(uint16_t a, uint16_t b) {
  if (a == b) return 0;
  const auto key = [](uint16_t v) { return (v & 0x8000) ? -static_cast<int64_t>(v & 0x7fff) : int64_t{v}; };
  return std::llabs(key(a) - key(b));
}

// Runs op on bf16 inputs and, separately, on their exact f32 widening; every
// bf16 output must be the matching f32 output rounded once.
void check_reference(const Op& op, const std::vector<Tensor>& inputs) {
  std::vector<Tensor> in16, in32;
  for (const Tensor& t : inputs) {
    in16.push_back(t.to(DType::BF16));
    in32.push_back(in16.back().to(DType::F32));
  }
  const std::vector<Tensor> got = op(in16, DType::BF16);
  const std::vector<Tensor> want32 = op(in32, DType::F32);
  REQUIRE(got.size() == want32.size());
  for (size_t k = 0; k < got.size(); ++k) {
    INFO("output " << k << " " << got[k].str());
    REQUIRE(got[k].dtype() == DType::BF16);
    const Tensor want = want32[k].to(DType::BF16);
    const auto* g = static_cast<const uint16_t*>(got[k].raw());
    const auto* w = static_cast<const uint16_t*>(want.raw());
    int64_t worst = 0, worst_at = 0;
    for (int64_t i = 0; i < got[k].numel(); ++i) {
      const int64_t d = ulp_distance(g[i], w[i]);
      if (d > worst) worst = d, worst_at = i;
    }
    INFO("worst element " << worst_at << ": got " << bf16_bits_to_float(g[worst_at]) << ", want "
                          << bf16_bits_to_float(w[worst_at]));
    CHECK(worst == 0);
    CHECK(test::count_nonfinite(want32[k]) == 0);
  }
}

}  // namespace

TEST_CASE("bf16 arithmetic is f32 arithmetic rounded once, ties to even") {
  // bf16 keeps 7 fraction bits: next to 1.0 the step is 2^-7.
  const float tie_down = 1.0f + std::ldexp(1.0f, -8);      // halfway 1 and 1+2^-7: to even, 1
  const float tie_up = 1.0f + 3 * std::ldexp(1.0f, -8);    // halfway 1+2^-7 and 1+2^-6: to even, 1+2^-6
  const float above = 1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -12);  // past the tie: up
  Tensor a = Tensor::from_vector({3}, std::vector<float>{1.0f, 1.0f, 1.0f}).to(DType::BF16);
  // The summands are exact in bf16; their f32 sums are not.
  Tensor b = Tensor::from_vector({3}, std::vector<float>{tie_down - 1, tie_up - 1, above - 1}).to(DType::BF16);
  Tensor y = out({3}, DType::BF16);
  ops::add_forward(a, b, y);
  const std::vector<float> sum = y.to(DType::F32).to_vector();
  CHECK(sum[0] == 1.0f);
  CHECK(sum[1] == 1.0f + std::ldexp(1.0f, -6));
  CHECK(sum[2] == 1.0f + std::ldexp(1.0f, -7));
}

TEST_CASE("bf16 elementwise ops equal the rounded f32 ops") {
  const Shape s{2, 3, 5, 7};
  check_reference([&](const std::vector<Tensor>& in, DType dt) {
    Tensor r = out(s, dt), g = out(s, dt), a = out(s, dt);
    ops::relu_forward(in[0], r);
    ops::sigmoid_forward(in[0], g);
    ops::add_forward(in[0], in[1], a);
    return std::vector<Tensor>{r, g, a};
  }, {test::randn(s, 1, DType::F32, 4.0), test::randn(s, 2)});
}

TEST_CASE("bf16 per-channel scale, concat and upsampling equal the rounded f32 ops") {
  const Shape s{2, 3, 4, 5};
  check_reference([&](const std::vector<Tensor>& in, DType dt) {
    Tensor m = out(s, dt), c = out({2, 5, 4, 5}, dt), u = out({2, 3, 8, 10}, dt);
    ops::mul_channel_forward(in[0], in[1], m);
    ops::concat_channels_forward({in[0], in[2]}, c);
    ops::upsample2x_forward(in[0], u);
    return std::vector<Tensor>{m, c, u};
  }, {test::randn(s, 3), test::randn({2, 3}, 4), test::randn({2, 2, 4, 5}, 5)});
}

TEST_CASE("bf16 pooling and linear equal the rounded f32 ops") {
  check_reference([&](const std::vector<Tensor>& in, DType dt) {
    Tensor p = out({2, 6}, dt), l = out({3, 4}, dt);
    ops::global_avg_pool_forward(in[0], p);
    ops::linear_forward(in[1], in[2], l);
    return std::vector<Tensor>{p, l};
  }, {test::randn({2, 6, 9, 11}, 6), test::randn({3, 10}, 7), test::randn({4, 10}, 8)});
}

TEST_CASE("bf16 convolutions equal the rounded f32 convolutions") {
  // The layer kinds of COVID-Rate: 3x3 (Winograd's path in f32), strided,
  // dilated, 1x1; with and without bias.
  struct Conv {
    int cin, cout, k;
    ConvParams p;
    bool bias;
  };
  const Conv convs[] = {{4, 6, 3, ConvParams::same(3), true},
                        {4, 6, 3, ConvParams::same(3, 2), true},
                        {5, 3, 3, ConvParams::same(3, 1, 4), false},
                        {8, 2, 1, ConvParams::same(1), true}};
  uint64_t seed = 20;
  for (const Conv& c : convs) {
    INFO("conv " << c.cin << "->" << c.cout << " k" << c.k << " stride " << c.p.stride << " dilation "
                 << c.p.dilation);
    const Shape xs{2, c.cin, 12, 10}, ws{c.cout, c.cin, c.k, c.k};
    check_reference([&](const std::vector<Tensor>& in, DType dt) {
      Tensor y = out(conv2d_out_shape(xs, ws, c.p), dt);
      ops::conv2d_forward(in[0], in[1], c.bias ? &in[2] : nullptr, c.p, y);
      return std::vector<Tensor>{y};
    }, {test::randn(xs, seed), test::randn(ws, seed + 1, DType::F32, 0.3), test::randn({c.cout}, seed + 2)});
    seed += 3;
  }
}

TEST_CASE("bf16 squeeze-and-excitation: the output and the saved z, h, s are the rounded f32 values") {
  const int64_t n = 2, c = 32, cr = 2;
  check_reference([&](const std::vector<Tensor>& in, DType dt) {
    Tensor y = out(in[0].shape(), dt);
    SeSaved saved{out({n, c}, dt), out({n, cr}, dt), out({n, c}, dt)};
    ops::se_forward(in[0], in[1], in[2], y, saved);
    return std::vector<Tensor>{y, saved.pooled, saved.hidden, saved.scale};
  }, {test::randn({n, c, 6, 5}, 40, DType::F32, 1.0), test::randn({cr, c}, 41, DType::F32, 0.5),
      test::randn({c, cr}, 42)});
}

TEST_CASE("cast: f32 -> bf16/f16 rounds to nearest even, back is exact, NaN and Inf survive") {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> values = {0.0f, -0.0f, 1.0f, -3.5f, 1e-3f, 3.0e38f, -inf, inf,
                               std::numeric_limits<float>::quiet_NaN(), 1.0f + std::ldexp(1.0f, -8),
                               1.0f + std::ldexp(1.0f, -11), 65520.0f, std::ldexp(1.0f, -20)};
  const Tensor noise = test::randn({200}, 50, DType::F32, 100.0);
  for (float v : noise.to_vector()) values.push_back(v);
  const Tensor x = Tensor::from_vector({static_cast<int64_t>(values.size())}, values);
  for (DType narrow : {DType::BF16, DType::F16}) {
    INFO(std::string(to_string(narrow)));
    Tensor h = Tensor::empty(x.shape(), narrow), back = out(x.shape(), DType::F32);
    ops::cast(x, h);
    ops::cast(h, back);
    const std::vector<float> got = back.to_vector();
    for (size_t i = 0; i < values.size(); ++i) {
      INFO("value " << values[i]);
      const uint16_t bits = narrow == DType::BF16 ? float_to_bf16_bits(values[i]) : float_to_half_bits(values[i]);
      const float want = narrow == DType::BF16 ? bf16_bits_to_float(bits) : half_bits_to_float(bits);
      if (std::isnan(values[i])) {
        CHECK(std::isnan(got[i]));
      } else {
        CHECK(std::bit_cast<uint32_t>(got[i]) == std::bit_cast<uint32_t>(want));
      }
    }
    // Hand-known results: a tie rounds to even; overflow and infinities stay infinite.
    CHECK(got[9] == (narrow == DType::BF16 ? 1.0f : 1.0f + std::ldexp(1.0f, -8)));
    CHECK(got[6] == -inf);
    CHECK(got[7] == inf);
    if (narrow == DType::F16) CHECK(got[11] == inf);
    if (narrow == DType::BF16) CHECK(got[5] == doctest::Approx(3.0e38f).epsilon(1e-2));
  }
}

TEST_CASE("bf16 fill rounds the value once; Tensor::zeros and full work for bf16") {
  const double third = 1.0 / 3.0;
  const Tensor t = Tensor::full({5}, third, DType::BF16);
  const uint16_t want = float_to_bf16_bits(double_to_float_round_to_odd(third));
  const auto* bits = static_cast<const uint16_t*>(t.raw());
  for (int i = 0; i < 5; ++i) CHECK(bits[i] == want);
  const std::vector<float> zeros = Tensor::zeros({4}, DType::BF16).to(DType::F32).to_vector();
  CHECK(zeros == std::vector<float>(4, 0.0f));
}

namespace {
void check_throws_naming(const std::function<void()>& fn, const std::vector<std::string>& words) {
  try {
    fn();
    FAIL("no error thrown");
  } catch (const Error& e) {
    const std::string what = e.what();
    for (const std::string& w : words) {
      INFO("message: " << what);
      CHECK(what.find(w) != std::string::npos);
    }
  }
}
}  // namespace

TEST_CASE("bf16 dtype checks name the op and the dtype") {
  const Tensor x16 = Tensor::zeros({1, 2, 4, 4}, DType::BF16), x32 = Tensor::zeros({1, 2, 4, 4});
  Tensor y16 = Tensor::zeros({1, 2, 4, 4}, DType::BF16), y32 = Tensor::zeros({1, 2, 4, 4});
  // Mixed dtypes within one op.
  check_throws_naming([&] { ops::add_forward(x16, x32, y16); }, {"add_forward", "f32", "bf16"});
  check_throws_naming([&] { ops::relu_forward(x16, y32); }, {"relu_forward", "output"});
  // Backward and training ops stay f32/f64.
  check_throws_naming([&] { ops::relu_backward(x16, x16, y16, false); }, {"relu_backward", "bf16"});
  check_throws_naming([&] { ops::maxpool2x2_backward(y16, x16, y16, false); }, {"maxpool2x2_backward", "bf16"});
  // f16 is a storage format only.
  const Tensor h = Tensor::empty({4}, DType::F16);
  Tensor hy = Tensor::empty({4}, DType::F16);
  check_throws_naming([&] { ops::relu_forward(h, hy); }, {"relu_forward", "f16"});
  // cast converts between f32 and a 16-bit format, same shape.
  Tensor d = Tensor::zeros({1, 2, 4, 4}, DType::F64);
  check_throws_naming([&] { ops::cast(d, y16); }, {"cast", "f64", "bf16"});
  Tensor h_like = Tensor::empty(x16.shape(), DType::F16);
  check_throws_naming([&] { ops::cast(x16, h_like); }, {"cast", "bf16", "f16"});
  Tensor wrong = Tensor::zeros({2, 2, 4, 4}, DType::BF16);
  check_throws_naming([&] { ops::cast(x32, wrong); }, {"cast", "shape"});
}
