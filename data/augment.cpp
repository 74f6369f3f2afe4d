#include "data/augment.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "nn/error.h"

namespace covidrate::data {
namespace {

double uniform(std::mt19937_64& rng, double lo, double hi) { return lo + (hi - lo) * uniform01(rng); }

// 2 x 2 product, row-major.
std::array<double, 4> times(const std::array<double, 4>& l, const std::array<double, 4>& r) {
  return {l[0] * r[0] + l[1] * r[2], l[0] * r[1] + l[1] * r[3], l[2] * r[0] + l[3] * r[2],
          l[2] * r[1] + l[3] * r[3]};
}

}  // namespace

double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

AffineTransform random_transform(const AugmentOptions& o, int64_t size, std::mt19937_64& rng) {
  CR_CHECK(o.zoom >= 0 && o.zoom < 1 && o.shift >= 0 && o.shift < 1 && o.shear >= 0 && o.shear < 1.5 &&
               o.rotation_degrees >= 0 && o.rotation_degrees <= 180,
           "augment: zoom " << o.zoom << ", shift " << o.shift << ", shear " << o.shear << ", rotation "
                            << o.rotation_degrees
                            << " (need zoom and shift in [0, 1), shear in [0, 1.5) rad, rotation in [0, 180])");
  // Every draw happens whatever the options, so turning one augmentation on or
  // off does not reshuffle the others' random numbers.
  const double theta = uniform(rng, -1, 1) * o.rotation_degrees * std::numbers::pi / 180.0;
  const double tx = uniform(rng, -1, 1) * o.shift * static_cast<double>(size);
  const double ty = uniform(rng, -1, 1) * o.shift * static_cast<double>(size);
  const double shear = uniform(rng, -1, 1) * o.shear;
  const double zx = 1.0 + uniform(rng, -1, 1) * o.zoom;
  const double zy = 1.0 + uniform(rng, -1, 1) * o.zoom;
  const bool flip_x = uniform01(rng) < 0.5 && o.horizontal_flip;
  const bool flip_y = uniform01(rng) < 0.5 && o.vertical_flip;

  // Output -> source, composed as Keras does: rotation, then shear, then zoom.
  const std::array<double, 4> rotation{std::cos(theta), -std::sin(theta), std::sin(theta), std::cos(theta)};
  const std::array<double, 4> shearing{1, -std::sin(shear), 0, std::cos(shear)};
  const std::array<double, 4> zoom{zx, 0, 0, zy};
  const std::array<double, 4> flips{flip_x ? -1.0 : 1.0, 0, 0, flip_y ? -1.0 : 1.0};
  AffineTransform t;
  t.a = times(times(times(rotation, shearing), zoom), flips);
  t.t = {tx, ty};
  return t;
}

void apply_transform(const AffineTransform& tr, int64_t size, const float* image, float* image_out,
                     const float* mask, float* mask_out) {
  CR_CHECK(size > 0, "augment: image size " << size);
  CR_CHECK((mask == nullptr) == (mask_out == nullptr), "augment: a mask needs an output and vice versa");
  const double c = (static_cast<double>(size) - 1.0) / 2.0;
  const double last = static_cast<double>(size - 1);
  for (int64_t y = 0; y < size; ++y) {
    for (int64_t x = 0; x < size; ++x) {
      const double dx = static_cast<double>(x) - c, dy = static_cast<double>(y) - c;
      const double sx = std::clamp(tr.a[0] * dx + tr.a[1] * dy + c + tr.t[0], 0.0, last);
      const double sy = std::clamp(tr.a[2] * dx + tr.a[3] * dy + c + tr.t[1], 0.0, last);
      const int64_t x0 = static_cast<int64_t>(sx), y0 = static_cast<int64_t>(sy);
      const int64_t x1 = std::min(x0 + 1, size - 1), y1 = std::min(y0 + 1, size - 1);
      const double ax = sx - static_cast<double>(x0), ay = sy - static_cast<double>(y0);
      const double top = (1 - ax) * image[y0 * size + x0] + ax * image[y0 * size + x1];
      const double bottom = (1 - ax) * image[y1 * size + x0] + ax * image[y1 * size + x1];
      image_out[y * size + x] = static_cast<float>((1 - ay) * top + ay * bottom);
      if (mask) {
        const int64_t nx = std::lround(sx), ny = std::lround(sy);
        mask_out[y * size + x] = mask[ny * size + nx];
      }
    }
  }
}

}  // namespace covidrate::data
