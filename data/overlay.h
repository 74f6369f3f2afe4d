// Pictures for people: a slice in the lung window as grey, with the outlines of
// masks drawn over it in colour, a predicted mask compared with the truth,
// several such pictures tiled into a montage, and the rectangles and digits
// that plots are drawn with. Used by `segment`, `synth`, `lungs`, `eval` and
// `pseudo-label`.
#pragma once
#include <array>
#include <cstdint>
#include <string>
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
// labels: a mask read from a file (floats) or made here (bytes, LabelVolume).
template <class T>
void draw_outline(RgbImage& picture, const BasicVolume<T>& labels, int64_t z, float which, Rgb colour);

// Colours of agreement_tile: lesion in both masks, only in the prediction, only in the truth.
inline constexpr Rgb kFoundColour{0, 200, 0};
inline constexpr Rgb kFalseAlarmColour{255, 40, 40};
inline constexpr Rgb kMissedColour{0, 140, 255};

// A picture of how a predicted lesion mask agrees with the true one, over
// `picture` (the slice, e.g. grey_slice): pixels of lesion in both are tinted
// kFoundColour, only predicted kFalseAlarmColour, only true kMissedColour
// (half the colour, half the slice). Masks are nonzero = lesion, row-major,
// the picture's size.
RgbImage agreement_tile(const RgbImage& picture, const std::vector<uint8_t>& truth,
                        const std::vector<uint8_t>& predicted);

// `picture` shrunk by an integer factor so that neither side exceeds
// `max_side` (each output pixel the mean of its block); as it is when it fits.
RgbImage shrink_to(const RgbImage& picture, int64_t max_side);

// The pixels x0 <= x < x1, y0 <= y < y1 (clipped to the picture) in colour c.
void fill_rect(RgbImage& img, int64_t x0, int64_t y0, int64_t x1, int64_t y1, Rgb c);
// Text in a 3 x 5 pixel font scaled by `scale`, top left at (x, y): digits,
// '.' and '%' only (the numbers of plots and tiles); other characters leave a gap.
void draw_text(RgbImage& img, int64_t x, int64_t y, const std::string& text, int64_t scale, Rgb c);

// Tiles pictures left to right, `columns` per row, with a dark gap between
// them; tiles may differ in size (each cell takes the largest tile's size).
RgbImage montage(const std::vector<RgbImage>& tiles, int columns, int gap = 4);

}  // namespace covidrate::data
