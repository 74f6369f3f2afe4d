// Real-time augmentation: every mini-batch, every image gets a fresh random
// geometric transform, applied identically to its mask (the Keras recipe of
// the COVID-Rate reference code: ImageDataGenerator on images and masks with
// one seed). Over an epoch each training image is seen once, transformed.
//
// Defaults, in Keras' terms: zoom_range 0.1, width_shift_range and
// height_shift_range 0.1, shear_range 0.1 rad (about 5.7 degrees: small,
// because shear distorts anatomy that never shears), no rotation and no flips
// (chest CT slices come in a fixed orientation; turn them on with the options),
// fill_mode "nearest". These are the ranges commonly used with the authors' kind
// of generator; the paper does not list its own.
//
// Images are sampled bilinearly, masks by nearest neighbour so they stay
// binary. Both sample the same source position for each output pixel, so a
// structure moves identically in both.
#pragma once
#include <array>
#include <cstdint>
#include <random>

namespace covidrate::data {

struct AugmentOptions {
  double zoom = 0.1;              // scale drawn per axis from [1 - zoom, 1 + zoom]
  double shift = 0.1;             // translation, a fraction of the side, per axis
  double shear = 0.1;             // shear angle in radians, from [-shear, shear]
  double rotation_degrees = 0.0;  // rotation from [-r, r]
  bool horizontal_flip = false;   // left-right with probability 1/2
  bool vertical_flip = false;     // top-bottom with probability 1/2
};

// The map from an output pixel (x, y) to the source position it samples,
// around the image centre c: source = A * (p - c) + c + t. The identity
// transform is {1, 0, 0, 1, 0, 0}.
struct AffineTransform {
  std::array<double, 4> a{1, 0, 0, 1};  // row-major 2 x 2
  std::array<double, 2> t{0, 0};        // in pixels
};

// A uniform double in [0, 1) from the raw engine output (the standard
// distributions are implementation-defined; this is the same everywhere).
double uniform01(std::mt19937_64& rng);

// Draws one transform for a size x size image.
AffineTransform random_transform(const AugmentOptions& options, int64_t size, std::mt19937_64& rng);

// Applies `transform` to a size x size image and, when given, its mask
// (row-major; outputs must not alias inputs). Positions outside the source take
// the nearest edge pixel (Keras fill_mode "nearest").
void apply_transform(const AffineTransform& transform, int64_t size, const float* image, float* image_out,
                     const float* mask = nullptr, float* mask_out = nullptr);

}  // namespace covidrate::data
