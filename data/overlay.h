// Pictures for people: a slice in the lung window as grey, with the outlines of
// masks drawn over it in colour, and several such pictures tiled into a montage.
// Used by `covidrate synth` and by the documentation's figures.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "data/volume.h"

namespace covidrate::data {

using Rgb = std::array<uint8_t, 3>;
inline constexpr Rgb kRightLungColour{0, 200, 0};
inline constexpr Rgb kLeftLungColour{0, 140, 255};
inline constexpr Rgb kLesionColour{255, 40, 40};

struct RgbImage {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> rgb;  // width * height * 3, row-major
};

// Slice z of `image` as grey: HU through the input domain's lung window,
// 8-bit pictures as they are.
RgbImage grey_slice(const Volume& image, int64_t z);

// Draws the outline (pixels of the region with a 4-neighbour outside it) of
// the pixels of slice z of `labels` equal to `which`, in `colour`.
void draw_outline(RgbImage& picture, const Volume& labels, int64_t z, float which, Rgb colour);

// Tiles pictures left to right, `columns` per row, with a dark gap between
// them; tiles may differ in size (each cell takes the largest tile's size).
RgbImage montage(const std::vector<RgbImage>& tiles, int columns, int gap = 4);

}  // namespace covidrate::data
