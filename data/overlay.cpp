#include "data/overlay.h"

#include <algorithm>
#include <cmath>

#include "data/input_domain.h"
#include "nn/error.h"

namespace covidrate::data {

RgbImage grey_slice(const Volume& image, int64_t z) {
  CR_CHECK(z >= 0 && z < image.nz, "grey_slice: slice " << z << " outside 0.." << image.nz - 1);
  RgbImage out{image.nx, image.ny, std::vector<uint8_t>(image.nx * image.ny * 3)};
  const float* s = image.slice(z);
  const bool hu = image.intensity == Intensity::HounsfieldUnits;
  for (int64_t p = 0; p < image.nx * image.ny; ++p) {
    const float v = hu ? hu_to_domain(s[p]) : std::clamp(s[p], 0.f, 255.f);
    const uint8_t g = uint8_t(std::lround(v));
    out.rgb[3 * p] = out.rgb[3 * p + 1] = out.rgb[3 * p + 2] = g;
  }
  return out;
}

void draw_outline(RgbImage& picture, const Volume& labels, int64_t z, float which, Rgb colour) {
  CR_CHECK(labels.nx == picture.width && labels.ny == picture.height,
           "draw_outline: mask " << labels.nx << "x" << labels.ny << " does not match picture " << picture.width
                                 << "x" << picture.height);
  CR_CHECK(z >= 0 && z < labels.nz, "draw_outline: slice " << z << " outside 0.." << labels.nz - 1);
  const int64_t nx = labels.nx, ny = labels.ny;
  const float* s = labels.slice(z);
  auto inside = [&](int64_t x, int64_t y) { return x >= 0 && y >= 0 && x < nx && y < ny && s[y * nx + x] == which; };
  for (int64_t y = 0; y < ny; ++y)
    for (int64_t x = 0; x < nx; ++x) {
      if (!inside(x, y)) continue;
      if (inside(x - 1, y) && inside(x + 1, y) && inside(x, y - 1) && inside(x, y + 1)) continue;
      std::copy(colour.begin(), colour.end(), picture.rgb.begin() + 3 * (y * nx + x));
    }
}

RgbImage montage(const std::vector<RgbImage>& tiles, int columns, int gap) {
  CR_CHECK(!tiles.empty() && columns > 0, "montage: needs at least one tile and one column");
  int64_t cell_w = 0, cell_h = 0;
  for (const auto& t : tiles) cell_w = std::max(cell_w, t.width), cell_h = std::max(cell_h, t.height);
  const int64_t cols = std::min<int64_t>(columns, int64_t(tiles.size()));
  const int64_t rows = (int64_t(tiles.size()) + cols - 1) / cols;
  RgbImage out;
  out.width = cols * cell_w + (cols + 1) * gap;
  out.height = rows * cell_h + (rows + 1) * gap;
  out.rgb.assign(out.width * out.height * 3, 24);
  for (size_t i = 0; i < tiles.size(); ++i) {
    const int64_t x0 = gap + int64_t(i) % cols * (cell_w + gap), y0 = gap + int64_t(i) / cols * (cell_h + gap);
    const RgbImage& t = tiles[i];
    for (int64_t y = 0; y < t.height; ++y)
      std::copy_n(t.rgb.data() + 3 * y * t.width, 3 * t.width, out.rgb.data() + 3 * ((y0 + y) * out.width + x0));
  }
  return out;
}

}  // namespace covidrate::data
