#include "data/prepare.h"

#include <algorithm>
#include <cmath>

#include "data/input_domain.h"
#include "nn/error.h"

namespace covidrate::data {
namespace {

// Value at the continuous position (fx, fy) in pixel-index units, edges clamped.
float bilinear_at(const float* src, int64_t nx, int64_t ny, double fx, double fy) {
  fx = std::clamp(fx, 0.0, static_cast<double>(nx - 1));
  fy = std::clamp(fy, 0.0, static_cast<double>(ny - 1));
  const int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
  const int64_t x1 = std::min(x0 + 1, nx - 1), y1 = std::min(y0 + 1, ny - 1);
  const double ax = fx - static_cast<double>(x0), ay = fy - static_cast<double>(y0);
  const double top = (1 - ax) * src[y0 * nx + x0] + ax * src[y0 * nx + x1];
  const double bottom = (1 - ax) * src[y1 * nx + x0] + ax * src[y1 * nx + x1];
  return static_cast<float>((1 - ay) * top + ay * bottom);
}

// Output pixel i of n_out covers source position (i + 0.5) * n_in / n_out - 0.5.
double source_coordinate(int64_t i, int64_t n_in, int64_t n_out) {
  return (static_cast<double>(i) + 0.5) * static_cast<double>(n_in) / static_cast<double>(n_out) - 0.5;
}

std::vector<float> resize_nearest(const float* src, int64_t nx, int64_t ny, int64_t out_nx, int64_t out_ny) {
  std::vector<float> out(static_cast<size_t>(out_nx * out_ny));
  for (int64_t y = 0; y < out_ny; ++y) {
    const int64_t sy = std::min(ny - 1, static_cast<int64_t>((y + 0.5) * ny / out_ny));
    for (int64_t x = 0; x < out_nx; ++x) {
      const int64_t sx = std::min(nx - 1, static_cast<int64_t>((x + 0.5) * nx / out_nx));
      out[y * out_nx + x] = src[sy * nx + sx];
    }
  }
  return out;
}

// The slice centred in a side x side square of zeros.
std::vector<float> pad_to_square(const float* src, const Placement& p) {
  std::vector<float> square(static_cast<size_t>(p.side * p.side), 0.f);
  for (int64_t y = 0; y < p.ny; ++y)
    std::copy(src + y * p.nx, src + (y + 1) * p.nx, square.begin() + (y + p.pad_y) * p.side + p.pad_x);
  return square;
}

void check_same_grid(const Volume& image, const Volume* other, const char* what) {
  if (!other) return;
  CR_CHECK(other->nx == image.nx && other->ny == image.ny && other->nz == 1,
           "prepare_slice: the " << what << " (" << other->source << ") is " << other->nx << " x "
                                 << other->ny << " x " << other->nz << "; the image (" << image.source
                                 << ") is " << image.nx << " x " << image.ny << " x 1");
}

}  // namespace

Placement placement_for(int64_t nx, int64_t ny, int64_t size) {
  CR_CHECK(nx > 0 && ny > 0, "placement_for: empty slice " << nx << " x " << ny);
  CR_CHECK(size > 0, "placement_for: the model size must be positive, got " << size);
  Placement p;
  p.nx = nx;
  p.ny = ny;
  p.side = std::max(nx, ny);
  p.pad_x = (p.side - nx) / 2;
  p.pad_y = (p.side - ny) / 2;
  p.size = size;
  return p;
}

std::vector<float> resize_bilinear(const float* src, int64_t nx, int64_t ny, int64_t out_nx, int64_t out_ny) {
  std::vector<float> out(static_cast<size_t>(out_nx * out_ny));
  for (int64_t y = 0; y < out_ny; ++y) {
    const double fy = source_coordinate(y, ny, out_ny);
    for (int64_t x = 0; x < out_nx; ++x)
      out[y * out_nx + x] = bilinear_at(src, nx, ny, source_coordinate(x, nx, out_nx), fy);
  }
  return out;
}

PreparedSlice prepare_slice(const Volume& image, const Volume* mask, const Volume* lungs, int64_t size) {
  CR_CHECK(image.nz == 1, "prepare_slice: " << image.source << " has " << image.nz << " slices; expected one");
  check_same_grid(image, mask, "mask");
  check_same_grid(image, lungs, "lung mask");
  PreparedSlice out;
  out.placement = placement_for(image.nx, image.ny, size);
  const Placement& p = out.placement;

  const std::vector<float> square = pad_to_square(image.voxels.data(), p);
  out.image = resize_bilinear(square.data(), p.side, p.side, size, size);
  if (lungs) {
    const std::vector<float> lung_square = pad_to_square(lungs->voxels.data(), p);
    const std::vector<float> lung_s = resize_nearest(lung_square.data(), p.side, p.side, size, size);
    for (size_t i = 0; i < out.image.size(); ++i)
      if (lung_s[i] == 0.f) out.image[i] = 0.f;
  }
  standardize(out.image.data(), static_cast<int64_t>(out.image.size()));

  if (mask) {
    const std::vector<float> mask_square = pad_to_square(mask->voxels.data(), p);
    out.mask = resize_nearest(mask_square.data(), p.side, p.side, size, size);
    for (float& v : out.mask) v = v != 0.f ? 1.f : 0.f;
  }
  return out;
}

PreparedSlice prepare_sample(const Sample& sample, int64_t size) {
  return prepare_slice(sample.image, &sample.mask, sample.has_lungs() ? &sample.lungs : nullptr, size);
}

std::vector<float> to_original_grid(const float* prediction, const Placement& p) {
  CR_CHECK(p.size > 0 && p.side > 0, "to_original_grid: empty placement");
  std::vector<float> out(static_cast<size_t>(p.nx * p.ny));
  for (int64_t y = 0; y < p.ny; ++y) {
    const double fy = source_coordinate(y + p.pad_y, p.size, p.side);
    for (int64_t x = 0; x < p.nx; ++x)
      out[y * p.nx + x] = bilinear_at(prediction, p.size, p.size, source_coordinate(x + p.pad_x, p.size, p.side), fy);
  }
  return out;
}

}  // namespace covidrate::data
