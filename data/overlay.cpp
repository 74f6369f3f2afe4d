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

template <class T>
void draw_outline(RgbImage& picture, const BasicVolume<T>& labels, int64_t z, float which, Rgb colour) {
  CR_CHECK(labels.nx == picture.width && labels.ny == picture.height,
           "draw_outline: mask " << labels.nx << "x" << labels.ny << " does not match picture " << picture.width
                                 << "x" << picture.height);
  CR_CHECK(z >= 0 && z < labels.nz, "draw_outline: slice " << z << " outside 0.." << labels.nz - 1);
  const int64_t nx = labels.nx, ny = labels.ny;
  const T* s = labels.slice(z);
  auto inside = [&](int64_t x, int64_t y) {
    return x >= 0 && y >= 0 && x < nx && y < ny && static_cast<float>(s[y * nx + x]) == which;
  };
  for (int64_t y = 0; y < ny; ++y)
    for (int64_t x = 0; x < nx; ++x) {
      if (!inside(x, y)) continue;
      if (inside(x - 1, y) && inside(x + 1, y) && inside(x, y - 1) && inside(x, y + 1)) continue;
      std::copy(colour.begin(), colour.end(), picture.rgb.begin() + 3 * (y * nx + x));
    }
}
template void draw_outline(RgbImage&, const Volume&, int64_t, float, Rgb);
template void draw_outline(RgbImage&, const LabelVolume&, int64_t, float, Rgb);

void fill_rect(RgbImage& img, int64_t x0, int64_t y0, int64_t x1, int64_t y1, Rgb c) {
  x0 = std::max<int64_t>(x0, 0), y0 = std::max<int64_t>(y0, 0);
  x1 = std::min(x1, img.width), y1 = std::min(y1, img.height);
  for (int64_t y = y0; y < y1; ++y)
    for (int64_t x = x0; x < x1; ++x) std::copy(c.begin(), c.end(), img.rgb.begin() + (y * img.width + x) * 3);
}

// Rows top to bottom, 3 bits each (4 = left column).
void draw_text(RgbImage& img, int64_t x, int64_t y, const std::string& text, int64_t scale, Rgb c) {
  static const uint8_t digits[10][5] = {{7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7},
                                        {5, 5, 7, 1, 1}, {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1},
                                        {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7}};
  static const uint8_t dot[5] = {0, 0, 0, 0, 2}, percent_sign[5] = {5, 1, 2, 4, 5};
  for (char ch : text) {
    const uint8_t* rows = ch >= '0' && ch <= '9' ? digits[ch - '0']
                          : ch == '.'             ? dot
                          : ch == '%'             ? percent_sign
                                                  : nullptr;
    if (rows)
      for (int r = 0; r < 5; ++r)
        for (int col = 0; col < 3; ++col)
          if (rows[r] & (4 >> col))
            fill_rect(img, x + col * scale, y + r * scale, x + (col + 1) * scale, y + (r + 1) * scale, c);
    x += 4 * scale;
  }
}

RgbImage agreement_tile(const RgbImage& picture, const std::vector<uint8_t>& truth,
                        const std::vector<uint8_t>& predicted) {
  const auto pixels = static_cast<size_t>(picture.width * picture.height);
  CR_CHECK(truth.size() == pixels && predicted.size() == pixels,
           "agreement_tile: masks of " << truth.size() << " and " << predicted.size() << " pixels over a "
                                       << picture.width << "x" << picture.height << " picture");
  RgbImage out = picture;
  for (size_t p = 0; p < pixels; ++p) {
    if (!truth[p] && !predicted[p]) continue;
    const Rgb& c = truth[p] && predicted[p] ? kFoundColour : predicted[p] ? kFalseAlarmColour : kMissedColour;
    for (int k = 0; k < 3; ++k) out.rgb[3 * p + k] = uint8_t((out.rgb[3 * p + k] + c[k] + 1) / 2);
  }
  return out;
}

RgbImage shrink_to(const RgbImage& picture, int64_t max_side) {
  CR_CHECK(max_side >= 1, "shrink_to: max_side " << max_side);
  const int64_t factor = (std::max(picture.width, picture.height) + max_side - 1) / max_side;
  if (factor <= 1) return picture;
  RgbImage out{picture.width / factor, picture.height / factor, {}};
  CR_CHECK(out.width >= 1 && out.height >= 1,
           "shrink_to: a " << picture.width << "x" << picture.height << " picture has no side left at 1/" << factor);
  out.rgb.assign(static_cast<size_t>(out.width * out.height * 3), 0);
  for (int64_t y = 0; y < out.height; ++y)
    for (int64_t x = 0; x < out.width; ++x)
      for (int k = 0; k < 3; ++k) {
        int64_t sum = 0;
        for (int64_t dy = 0; dy < factor; ++dy)
          for (int64_t dx = 0; dx < factor; ++dx)
            sum += picture.rgb[3 * ((y * factor + dy) * picture.width + x * factor + dx) + k];
        out.rgb[3 * (y * out.width + x) + k] = uint8_t((sum + factor * factor / 2) / (factor * factor));
      }
  return out;
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
