// f16 and bf16: the bit-level conversions against hand-worked patterns, the
// Tensor conversions built on them, and shipped-weights loading: an f32 store
// converted to f16 by `covidrate weights convert`'s code loads back into f32.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>

#include "model/covidrate_net.h"
#include "nn/half.h"
#include "nn/layers.h"
#include "nn/safetensors.h"
#include "nn/safetensors_convert.h"
#include "tests/support/test_support.h"
#include "tests/temp_files.h"

using namespace covidrate;

namespace {

uint16_t f16(float x) { return float_to_half_bits(x); }
uint16_t bf16(float x) { return float_to_bf16_bits(x); }
float from_bits(uint32_t bits) { return std::bit_cast<float>(bits); }

}  // namespace

TEST_CASE("f32 -> f16: hand-known bit patterns, round to nearest even") {
  CHECK(f16(1.0f) == 0x3c00);
  CHECK(f16(-2.0f) == 0xc000);
  CHECK(f16(0.0f) == 0x0000);
  CHECK(f16(-0.0f) == 0x8000);
  CHECK(f16(65504.0f) == 0x7bff);  // largest finite
  CHECK(f16(65519.0f) == 0x7bff);  // below the midpoint to 65536
  CHECK(f16(65520.0f) == 0x7c00);  // the midpoint: ties to even, and the even neighbour is inf
  CHECK(f16(1e6f) == 0x7c00);
  CHECK(f16(-1e6f) == 0xfc00);
  CHECK(f16(std::numeric_limits<float>::infinity()) == 0x7c00);
  CHECK(f16(std::ldexp(1.0f, -14)) == 0x0400);  // smallest normal
  CHECK(f16(std::ldexp(1023.0f, -24)) == 0x03ff);  // largest subnormal
  CHECK(f16(std::ldexp(1.0f, -24)) == 0x0001);  // smallest subnormal
  CHECK(f16(std::ldexp(1.0f, -25)) == 0x0000);  // half of it: a tie, to even (0)
  CHECK(f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)) == 0x0001);  // just above the tie
  CHECK(f16(-std::ldexp(1.0f, -25)) == 0x8000);
  CHECK(f16(std::ldexp(3.0f, -25)) == 0x0002);  // 1.5 units: tie between 1 and 2, to even
  CHECK(f16(std::ldexp(5.0f, -25)) == 0x0002);  // 2.5 units: tie between 2 and 3, to even
  CHECK(f16(std::ldexp(2047.0f, -25)) == 0x0400);  // rounds up out of the subnormals
  CHECK(f16(std::numeric_limits<float>::denorm_min()) == 0x0000);
  CHECK(f16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // tie between 0x3c00 and 0x3c01: even
  CHECK(f16(1.0f + std::ldexp(3.0f, -11)) == 0x3c02);  // tie between 0x3c01 and 0x3c02: even
  CHECK(f16(1.0f / 3.0f) == 0x3555);
  const uint16_t nan = f16(std::numeric_limits<float>::quiet_NaN());
  CHECK((nan & 0x7c00) == 0x7c00);
  CHECK((nan & 0x03ff) != 0);
  // A signalling NaN whose payload lies only in the low bits must not become inf.
  const uint16_t low_payload_nan = f16(from_bits(0x7f800001));
  CHECK((low_payload_nan & 0x7c00) == 0x7c00);
  CHECK((low_payload_nan & 0x03ff) != 0);
}

TEST_CASE("f16 -> f32 is exact, and every f16 survives the round trip") {
  CHECK(half_bits_to_float(0x3c00) == 1.0f);
  CHECK(half_bits_to_float(0xc000) == -2.0f);
  CHECK(half_bits_to_float(0x7bff) == 65504.0f);
  CHECK(half_bits_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(half_bits_to_float(0x3555) == 0.333251953125f);
  CHECK(half_bits_to_float(0xfc00) == -std::numeric_limits<float>::infinity());
  CHECK(std::signbit(half_bits_to_float(0x8000)));
  CHECK(std::isnan(half_bits_to_float(0x7e00)));
  int nans = 0;
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const float x = half_bits_to_float(static_cast<uint16_t>(bits));
    if (std::isnan(x)) {
      ++nans;
      CHECK(std::isnan(half_bits_to_float(f16(x))));
    } else if (f16(x) != bits) {
      FAIL("f16 " << bits << " -> " << x << " -> " << f16(x));
    }
  }
  CHECK(nans == 2 * 1023);
}

TEST_CASE("f32 -> f16 -> f32 error stays within half a unit in the last place") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> exponent(-30.0f, 17.0f);
  std::uniform_real_distribution<float> unit(1.0f, 2.0f);
  for (int k = 0; k < 200000; ++k) {
    const float x = (k % 2 ? -1.0f : 1.0f) * unit(rng) * std::exp2(std::floor(exponent(rng)));
    const float y = half_bits_to_float(f16(x));
    if (std::fabs(x) >= 65520.0f) {
      CHECK(std::isinf(y));
    } else if (std::fabs(x) >= std::ldexp(1.0f, -14)) {  // normal: relative, 2^-11
      CHECK(std::fabs(y - x) <= std::ldexp(std::fabs(x), -11));
    } else {  // subnormal: absolute, half of 2^-24
      CHECK(std::fabs(y - x) <= std::ldexp(1.0f, -25));
    }
  }
}

TEST_CASE("f32 -> bf16: the top 16 bits, rounded to nearest even") {
  CHECK(bf16(1.0f) == 0x3f80);
  CHECK(bf16(-2.0f) == 0xc000);
  CHECK(bf16(1.0f / 3.0f) == 0x3eab);  // 0x3eaaaaab: the dropped 0xaaab is above half
  CHECK(bf16(from_bits(0x3f808000)) == 0x3f80);  // tie, kept half even: down
  CHECK(bf16(from_bits(0x3f818000)) == 0x3f82);  // tie, kept half odd: up
  CHECK(bf16(from_bits(0xbf818000)) == 0xbf82);  // the same for negatives
  CHECK(bf16(from_bits(0x3f807fff)) == 0x3f80);
  CHECK(bf16(from_bits(0x3f808001)) == 0x3f81);
  CHECK(bf16(std::numeric_limits<float>::max()) == 0x7f80);  // rounds up to inf
  CHECK(bf16(std::numeric_limits<float>::infinity()) == 0x7f80);
  const uint16_t nan = bf16(from_bits(0x7f800001));  // payload only in the dropped bits
  CHECK((nan & 0x7f80) == 0x7f80);
  CHECK((nan & 0x007f) != 0);
  CHECK(bf16_bits_to_float(0x3eab) == from_bits(0x3eab0000));
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const float x = bf16_bits_to_float(static_cast<uint16_t>(bits));
    if (!std::isnan(x) && bf16(x) != bits) FAIL("bf16 " << bits << " does not survive the round trip");
  }
}

TEST_CASE("f64 narrows to 16 bits with one rounding, not two") {
  // 1 + 2^-11 + 2^-40 lies just above the f16 tie between 1 and 1 + 2^-10. To
  // nearest f32 it becomes the tie itself, which would then round down to 1.
  const double above_tie = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  CHECK(f16(static_cast<float>(above_tie)) == 0x3c00);  // the double rounding the code avoids
  CHECK(f16(double_to_float_round_to_odd(above_tie)) == 0x3c01);
  const double below_tie = 1.0 + std::ldexp(1.0, -11) - std::ldexp(1.0, -40);
  CHECK(f16(double_to_float_round_to_odd(below_tie)) == 0x3c00);
  CHECK(f16(double_to_float_round_to_odd(1.0 + std::ldexp(1.0, -11))) == 0x3c00);  // an exact tie stays a tie
  CHECK(std::isinf(double_to_float_round_to_odd(1e300)) == false);
  CHECK(f16(double_to_float_round_to_odd(1e300)) == 0x7c00);

  const Tensor wide = Tensor::from_vector(Shape{3}, std::vector<double>{above_tie, -above_tie, 0.1});
  const Tensor narrow = wide.to(DType::F16);
  REQUIRE(narrow.dtype() == DType::F16);
  const auto* bits = static_cast<const uint16_t*>(narrow.raw());
  CHECK(bits[0] == 0x3c01);
  CHECK(bits[1] == 0xbc01);
  CHECK(bits[2] == f16(0.1f));
}

TEST_CASE("Tensor::to converts f32/f64 and f16/bf16 both ways") {
  const Tensor x = test::randn(Shape{2, 3, 5, 7}, 11, DType::F32, 3.0);
  for (const DType narrow : {DType::F16, DType::BF16}) {
    CAPTURE(to_string(narrow));
    const Tensor h = x.to(narrow);
    CHECK(h.dtype() == narrow);
    CHECK(h.shape() == x.shape());
    CHECK(h.nbytes() == x.nbytes() / 2);
    const Tensor back = h.to(DType::F32);
    const Tensor back64 = h.to(DType::F64);
    const float* xs = x.data<float>();
    const auto* hs = static_cast<const uint16_t*>(h.raw());
    for (int64_t i = 0; i < x.numel(); ++i) {
      const uint16_t expected = narrow == DType::F16 ? f16(xs[i]) : bf16(xs[i]);
      REQUIRE(hs[i] == expected);
      const float widened = narrow == DType::F16 ? half_bits_to_float(expected) : bf16_bits_to_float(expected);
      REQUIRE(back.data<float>()[i] == widened);
      REQUIRE(back64.data<double>()[i] == static_cast<double>(widened));
    }
    // Through the other 16-bit format: exact widening, so one rounding.
    const DType other = narrow == DType::F16 ? DType::BF16 : DType::F16;
    const Tensor across = h.to(other);
    CHECK(test::closeness(across.to(DType::F32), h.to(DType::F32).to(other).to(DType::F32), 0, 0) == 0);
  }
}

namespace {

struct SmallStore {
  ParameterStore store;
  Conv2d conv;
  BatchNorm2d bn;
  explicit SmallStore(uint64_t seed, DType dtype = DType::F32)
      : store(dtype, seed), conv(store, "enc.conv", 3, 8, 3), bn(store, "enc.bn", 8) {
    store.allocate(Device::CPU);
  }
};

}  // namespace

TEST_CASE("an f32 store converted to f16 or bf16 loads back as the rounded originals") {
  test::TempDir dir;
  SmallStore original(1);
  // Non-trivial running statistics, so the buffers are tested as well.
  original.store.named_tensors().at("enc.bn.running_var").fill_(1.0 / 3.0);
  const std::string f32_path = dir.file("f32.safetensors");
  original.store.save(f32_path, {{"model", "small"}});

  for (const DType narrow : {DType::F16, DType::BF16}) {
    CAPTURE(to_string(narrow));
    const std::string path = dir.file(std::string(to_string(narrow)) + ".safetensors");
    safetensors::convert_file(f32_path, path, narrow);
    for (const auto& [name, t] : safetensors::load(path)) CHECK(t.dtype() == narrow);
    const auto metadata = safetensors::load_metadata(path);
    CHECK(metadata.at("model") == "small");
    CHECK(metadata.at("converted_from") == "f32");

    for (const DType wide : {DType::F32, DType::F64}) {
      SmallStore loaded(2, wide);
      loaded.store.load(path);
      for (const auto& [name, t] : original.store.named_tensors()) {
        CAPTURE(name);
        const Tensor expected = t.to(narrow).to(wide);
        CHECK(test::closeness(loaded.store.named_tensors().at(name), expected, 0, 0) == 0);
      }
    }
  }
  // Converting back to f32 records where the values came from.
  const std::string again = dir.file("again.safetensors");
  safetensors::convert_file(dir.file("f16.safetensors"), again, DType::F32);
  CHECK(safetensors::load_metadata(again).at("converted_from") == "f16");

  // A value beyond f16's range (65504) would come out infinite: refused, nothing
  // written (bf16, with f32's exponent, takes it).
  original.store.named_tensors().at("enc.bn.running_var").fill_(1e6);
  original.store.save(f32_path, {{"model", "small"}});
  CHECK_THROWS_WITH_AS(safetensors::convert_file(f32_path, dir.file("big16.safetensors"), DType::F16),
                       doctest::Contains("of 'enc.bn.running_var' (up to 1e+06) are beyond the range of f16"), Error);
  CHECK_FALSE(std::filesystem::exists(dir.file("big16.safetensors")));
  safetensors::convert_file(f32_path, dir.file("big-bf16.safetensors"), DType::BF16);
}

TEST_CASE("loading still rejects an f64 file into an f32 store, and 16-bit tensors of the wrong shape") {
  test::TempDir dir;
  SmallStore f64_store(1, DType::F64);
  const std::string path = dir.file("f64.safetensors");
  f64_store.store.save(path);
  SmallStore f32_store(2);
  // All 6 counted, the first 3 (by name) shown.
  CHECK_THROWS_WITH_AS(f32_store.store.load(path),
                       doctest::Contains("6 tensors do not match the model: 'enc.bn.bias' is f64[8], the model "
                                         "expects f32[8]; 'enc.bn.running_mean'"),
                       Error);

  auto tensors = safetensors::converted(f32_store.store.named_tensors(), DType::F16);
  tensors["enc.bn.bias"] = Tensor::zeros(Shape{7}, DType::F32).to(DType::F16);
  CHECK_THROWS_WITH_AS(f32_store.store.load(tensors, "edited"),
                       doctest::Contains("'enc.bn.bias' is f16[7], the model expects f32[8]"), Error);
}

TEST_CASE("COVID-Rate with f16-loaded weights predicts within 2e-3 of f32") {
  // f16 keeps 11 significant bits (relative error <= 2^-11 = 4.9e-4 per weight),
  // and through ~30 layers the errors partly cancel: measured max difference of
  // the probabilities 3.1e-4 (rel L2 1.9e-4); 2e-3 leaves a 6x margin.
  test::TempDir dir;
  NetConfig config;
  config.width = 0.125;
  config.seed = 5;
  CovidRateNet reference(config);
  const std::string path = dir.file("net.safetensors");
  reference.parameters().save(path);
  safetensors::convert_file(path, dir.file("net-f16.safetensors"), DType::F16);

  config.seed = 6;  // different initial weights: the load must replace every one
  CovidRateNet loaded(config);
  loaded.parameters().load(dir.file("net-f16.safetensors"));
  reference.set_training(false);
  loaded.set_training(false);
  const Tensor image = test::randn(Shape{1, 1, 64, 64}, 9);
  const Tensor expected = reference.forward(ag::Var(image)).value();
  const Tensor actual = loaded.forward(ag::Var(image)).value();
  const double max_diff = test::closeness(actual, expected, 0, 1.0);  // atol 1: the max |difference|
  MESSAGE("COVID-Rate width 0.125, 64x64: max |p_f16 - p_f32| = " << max_diff
                                                                   << ", rel L2 = " << test::rel_l2(actual, expected));
  CHECK(max_diff > 0);  // the weights really were rounded
  CHECK(max_diff <= 2e-3);
}
