// The passes of the classical lung extraction (data/lungs.h), shared by the
// files that implement it: data/lungs.cpp (the slice passes and the driver),
// data/lung_outline.cpp (splitting joined lungs, the closing, the chest-wall
// dents) and data/lung_airways.cpp (following the trachea through slices where it
// touches a lung). Internal to data/: not an interface for other code.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "data/lungs.h"

namespace covidrate::data::lung_passes {

// How the image axes meet the patient's left-right axis (LPS x).
struct SideAxis {
  bool along_x;              // left-right runs along image x (else along y)
  bool right_at_low_index;   // the patient's right has the smaller index
};

// The smallest rectangle holding every pixel where `holds(value)`, widened by
// `margin` on each side and clamped to the slice: columns [x0, x0 + w), rows
// [y0, y0 + h). Empty (w = 0) when no pixel holds.
struct PixelBox {
  int64_t x0 = 0, y0 = 0, w = 0, h = 0;
  bool empty() const { return w == 0; }
};
template <typename Holds>
PixelBox bounding_box(const uint8_t* mask, int64_t nx, int64_t ny, int64_t margin, Holds holds) {
  int64_t lx = nx, ly = ny, hx = -1, hy = -1;
  for (int64_t y = 0; y < ny; ++y)
    for (int64_t x = 0; x < nx; ++x)
      if (holds(mask[y * nx + x])) lx = std::min(lx, x), hx = std::max(hx, x), ly = std::min(ly, y), hy = std::max(hy, y);
  PixelBox box;
  if (hx < 0) return box;
  box.x0 = std::max<int64_t>(0, lx - margin), box.y0 = std::max<int64_t>(0, ly - margin);
  box.w = std::min(nx, hx + margin + 1) - box.x0, box.h = std::min(ny, hy + margin + 1) - box.y0;
  return box;
}

// What the first pass learns about one slice.
struct SliceBody {
  int64_t area = 0;        // body pixels
  double middle = 0;       // body centroid along the left-right axis (index units)
  double width = 0;        // body extent along the left-right axis (pixels)
  double cx = 0, cy = 0;   // body centroid (pixels): the centre the chest wall is seen from
};

// Splits one air piece that straddles the midline (`piece`, 0/1) into the two
// lungs, writing their labels into out_labels.
void split_merged(const std::vector<uint8_t>& piece, int64_t nx, int64_t ny, const SideAxis& axis, double middle,
                  uint8_t* out_labels);

// One lung's mask on its bounding box plus a margin wider than the closing disk.
struct LungPatch {
  int64_t x0 = 0, y0 = 0, w = 0, h = 0;
  std::vector<uint8_t> mask;  // w * h
};

// Closes one lung's outline and fills its small holes, on its patch.
LungPatch close_and_fill(const uint8_t* labels, uint8_t side, int64_t nx, int64_t ny, float radius,
                         int64_t max_hole);

// Adds to lung `side` the dense lung against the chest wall that its outline
// leaves out (data/lung_outline.cpp says how).
void add_pleural_dents(uint8_t side, int64_t nx, int64_t ny, const SliceBody& body, const ClassicalLungOptions& o,
                       const SideAxis& axis, uint8_t* labels);

// "Central": within the airway band around the body's middle; "airway-sized":
// at least a noise piece, smaller than the airway limit (fractions of the body).
bool is_central(double centroid, const SliceBody& body, const ClassicalLungOptions& o);
bool is_airway_sized(double area, const SliceBody& body, const ClassicalLungOptions& o);

// Marks in `airway` (nx * ny * nz) the trachea and main bronchi where they are
// part of a lung's air piece, following them from the slices where label_sides
// found them apart (data/lung_airways.cpp). `lumen` is the pure-air level in the
// input domain; `labels` the slices' lung labels before the closing.
void follow_airways(const float* domain, float lumen, int64_t nx, int64_t ny, int64_t nz,
                    const std::vector<SliceBody>& body, const ClassicalLungOptions& o, const SideAxis& axis,
                    const uint8_t* labels, uint8_t* airway);

}  // namespace covidrate::data::lung_passes
