// 16-bit floating point formats, as bit patterns held in uint16_t.
//
//   f16  (IEEE 754 binary16): 1 sign, 5 exponent (bias 15), 10 fraction bits.
//        Largest finite 65504, smallest normal 2^-14, smallest subnormal 2^-24.
//   bf16 (bfloat16): the top 16 bits of an f32: 1 sign, 8 exponent, 7 fraction
//        bits. The range of f32 with 3 significant decimal digits.
//
// Shipped weights are stored in these formats to halve the files; the engine
// computes in f32/f64, so loading widens them (exact) and saving narrows them
// with round-to-nearest-even, the rounding IEEE arithmetic uses by default.
#pragma once
#include <cstdint>

namespace covidrate {

// f32 -> f16, round to nearest, ties to even. Results past 65504 become +-inf
// (as IEEE does: 65520, halfway to the next power of two, rounds up to inf);
// results below 2^-14 become subnormals or +-0. NaN stays NaN (quiet, with the
// top fraction bits kept).
uint16_t float_to_half_bits(float value);
// f16 -> f32: exact (every f16 value, subnormals included, is an f32 value).
float half_bits_to_float(uint16_t bits);

// f32 -> bf16, round to nearest, ties to even; overflow to +-inf, NaN stays NaN.
uint16_t float_to_bf16_bits(float value);
// bf16 -> f32: exact (the 16 bits become the top half of the f32).
float bf16_bits_to_float(uint16_t bits);

// f64 -> f32 rounded to odd: truncated toward zero, and the last bit set when
// anything was cut off. Narrowing f64 to 16 bits through an f32 rounded to
// NEAREST could round twice (a tie created by the first rounding broken the
// wrong way by the second); through an f32 rounded to ODD, the second rounding
// sees whether the value was above, at or below the tie, so f64 -> f16 or bf16
// rounds once, correctly. (Holds because f32 keeps >= 2 more bits than either.)
float double_to_float_round_to_odd(double value);

}  // namespace covidrate
