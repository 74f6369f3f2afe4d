// The picture helpers of data/overlay.h that the reports draw with: the
// agreement of a predicted mask with the truth, shrinking, the digit font.
#include <doctest/doctest.h>

#include <array>
#include <vector>

#include "data/overlay.h"
#include "nn/error.h"

using namespace covidrate;
using data::RgbImage;

namespace {

std::array<int, 3> pixel(const RgbImage& img, int64_t x, int64_t y) {
  const size_t at = static_cast<size_t>(3 * (y * img.width + x));
  return {img.rgb[at], img.rgb[at + 1], img.rgb[at + 2]};
}

}  // namespace

TEST_CASE("agreement_tile: found, false alarm and missed pixels each get half their colour") {
  const RgbImage grey{2, 2, std::vector<uint8_t>(12, 100)};
  const std::vector<uint8_t> truth{1, 1, 0, 0}, predicted{1, 0, 1, 0};
  const RgbImage tile = data::agreement_tile(grey, truth, predicted);
  REQUIRE(tile.width == 2);
  CHECK(pixel(tile, 0, 0) == std::array<int, 3>{50, 150, 50});   // in both: kFoundColour {0, 200, 0}
  CHECK(pixel(tile, 1, 0) == std::array<int, 3>{50, 120, 178});  // only true: kMissedColour {0, 140, 255}
  CHECK(pixel(tile, 0, 1) == std::array<int, 3>{178, 70, 70});   // only predicted: kFalseAlarmColour {255, 40, 40}
  CHECK(pixel(tile, 1, 1) == std::array<int, 3>{100, 100, 100}); // in neither: the slice
  CHECK_THROWS_WITH_AS(data::agreement_tile(grey, {1, 0, 0}, predicted), doctest::Contains("3 and 4 pixels"), Error);
}

TEST_CASE("shrink_to: block means by an integer factor, untouched when it fits") {
  RgbImage wide{4, 2, {}};
  for (int v : {0, 10, 20, 30, 40, 50, 60, 70}) wide.rgb.insert(wide.rgb.end(), {uint8_t(v), uint8_t(v), uint8_t(v)});
  const RgbImage half = data::shrink_to(wide, 2);
  REQUIRE(half.width == 2);
  REQUIRE(half.height == 1);
  CHECK(pixel(half, 0, 0)[0] == 25);  // (0 + 10 + 40 + 50) / 4
  CHECK(pixel(half, 1, 0)[0] == 45);  // (20 + 30 + 60 + 70) / 4
  CHECK(data::shrink_to(wide, 4).rgb == wide.rgb);
  CHECK(data::shrink_to(RgbImage{5, 5, std::vector<uint8_t>(75, 1)}, 2).width == 1);  // factor 3, remainder dropped
}

TEST_CASE("draw_text: digits in a 3 x 5 font, scaled") {
  RgbImage img{8, 10, std::vector<uint8_t>(240, 0)};
  data::draw_text(img, 0, 0, "1", 2, {255, 255, 255});
  // "1" is rows 010, 110, 010, 010, 111; each font pixel a 2 x 2 block.
  CHECK(pixel(img, 2, 0)[0] == 255);
  CHECK(pixel(img, 0, 0)[0] == 0);
  CHECK(pixel(img, 1, 3)[0] == 255);
  CHECK(pixel(img, 5, 9)[0] == 255);
  CHECK(pixel(img, 7, 9)[0] == 0);  // the gap before the next character
}
