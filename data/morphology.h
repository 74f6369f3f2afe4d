// Binary morphology on masks: connected components, hole filling, and
// dilation/erosion/closing by a disk computed through exact Euclidean distance
// transforms (so a radius of 20 px costs the same as a radius of 2 px).
//
// Masks are uint8 images (0 = background, anything else = foreground), row-major
// with `nx` pixels per row; 3-D masks are slice-major like data::Volume.
#pragma once
#include <cstdint>
#include <vector>

#include "data/uninitialized.h"

namespace covidrate::data {

// Component labels: 0 = background, 1..count = components; size[k] is the pixel
// count of component k (size[0] is unused and 0).
struct Components {
  UninitializedVector<int32_t> label;  // written whole by whoever labels
  std::vector<int64_t> size;
  int32_t count = 0;
  int32_t largest() const;  // the label of the biggest component, 0 if none
};

// 8-connected components of a 2-D mask (4-connectivity would split thin diagonal
// vessels and airways that radiologists read as one structure).
Components components_2d(const uint8_t* mask, int64_t nx, int64_t ny);
// 6-connected components of a 3-D mask. Face connectivity keeps bowel gas and
// lungs apart across thick slices, where 26-connectivity would bridge them.
Components components_3d(const uint8_t* mask, int64_t nx, int64_t ny, int64_t nz);

// Sets to 1 every background pixel not 4-connected to the image border, but
// only in holes of at most `max_hole_pixels` pixels (all holes by default).
void fill_holes_2d(uint8_t* mask, int64_t nx, int64_t ny, int64_t max_hole_pixels = INT64_MAX);

// Squared Euclidean distance (in pixels) from each pixel to the nearest pixel
// where mask == 0 (0 on background). Felzenszwalb-Huttenlocher, O(n).
// Pixels outside the image count as background when `border_is_background`.
std::vector<float> squared_distance_to_background(const uint8_t* mask, int64_t nx, int64_t ny,
                                                  bool border_is_background);

// Convex hull of the foreground pixels' centres: hull[p] = 1 for every pixel
// whose centre lies inside or on it, 0 elsewhere (all 0 for an empty mask).
void convex_hull_2d(const uint8_t* mask, int64_t nx, int64_t ny, uint8_t* hull);

// Disk-shaped dilation, erosion and closing of radius `radius` pixels, in place.
void dilate_disk(uint8_t* mask, int64_t nx, int64_t ny, float radius);
void erode_disk(uint8_t* mask, int64_t nx, int64_t ny, float radius);
void close_disk(uint8_t* mask, int64_t nx, int64_t ny, float radius);

}  // namespace covidrate::data
