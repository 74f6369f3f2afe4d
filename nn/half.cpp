#include "nn/half.h"

#include <bit>
#include <cmath>

namespace covidrate {

namespace {

// value >> shift rounded to nearest, ties to even (0 < shift < 32).
uint32_t shift_right_rne(uint32_t value, int shift) {
  const uint32_t kept = value >> shift;
  const uint32_t rest = value & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  return kept + ((rest > half || (rest == half && (kept & 1))) ? 1 : 0);
}

}  // namespace

uint16_t float_to_half_bits(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint32_t sign = (bits >> 16) & 0x8000;
  const int exponent = static_cast<int>((bits >> 23) & 0xff);  // biased by 127
  const uint32_t fraction = bits & 0x7fffff;

  if (exponent == 0xff) {  // inf, or NaN: keep the top payload bits, force quiet so it stays NaN
    return static_cast<uint16_t>(sign | 0x7c00 | (fraction ? 0x200 | (fraction >> 13) : 0));
  }
  const int half_exponent = exponent - 127 + 15;
  if (half_exponent >= 31) return static_cast<uint16_t>(sign | 0x7c00);  // >= 2^16: past 65504 after any rounding
  if (half_exponent <= 0) {
    // Subnormal result, in units of 2^-24. Below 2^-25 (half the smallest
    // subnormal) everything rounds to zero; this also covers f32 subnormals.
    if (half_exponent < -10) return static_cast<uint16_t>(sign);
    const uint32_t significand = fraction | 0x800000;  // 24 bits, the implicit 1 made explicit
    // A carry out of the 10 fraction bits lands in the exponent field: 2^-14, the smallest normal. Correct.
    return static_cast<uint16_t>(sign | shift_right_rne(significand, 14 - half_exponent));
  }
  // Normal: keep 10 of 23 fraction bits. A carry out of the fraction bumps the
  // exponent, and from the largest exponent gives 0x7c00 = inf, as it should.
  const uint32_t rounded = shift_right_rne((static_cast<uint32_t>(half_exponent) << 23) | fraction, 13);
  return static_cast<uint16_t>(sign | rounded);
}

float half_bits_to_float(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1f;
  const uint32_t fraction = bits & 0x3ff;
  if (exponent == 0) {  // zero or subnormal: fraction x 2^-24, exact in f32
    const float magnitude = std::ldexp(static_cast<float>(fraction), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000 | (fraction << 13));  // inf, NaN
  return std::bit_cast<float>(sign | ((exponent - 15 + 127) << 23) | (fraction << 13));
}

uint16_t float_to_bf16_bits(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  // NaN: truncating could clear every payload bit left and make it inf; set the quiet bit.
  if ((bits & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((bits >> 16) | 0x40);
  // Round the magnitude's low 16 bits away; a carry into the exponent is correct, up to inf.
  return static_cast<uint16_t>(((bits >> 16) & 0x8000) | shift_right_rne(bits & 0x7fffffff, 16));
}

float bf16_bits_to_float(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

float double_to_float_round_to_odd(double value) {
  float narrowed = static_cast<float>(value);  // to nearest
  if (std::isnan(value) || static_cast<double>(narrowed) == value) return narrowed;
  // Inexact: step back toward zero if rounding went away from it (truncation), then mark the loss.
  if (std::fabs(static_cast<double>(narrowed)) > std::fabs(value)) narrowed = std::nextafter(narrowed, 0.0f);
  return std::bit_cast<float>(std::bit_cast<uint32_t>(narrowed) | 1u);
}

}  // namespace covidrate
