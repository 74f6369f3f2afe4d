// 2-D pictures (PNG, JPG) as one-slice Volumes, and PNG writers for overlays.
#pragma once
#include <cstdint>
#include <string>

#include "data/volume.h"

namespace covidrate::data {

// Reads a PNG or JPG as a Volume with nz = 1, spacing 1 mm, grayscale:
//  - a palette PNG yields the palette indices (multiclass masks) as Label;
//  - an RGB(A) picture yields the average of R, G and B;
//  - a PNG whose only values are 0 and 255 (or 0 and 1) is a binary mask: Label
//    with values 0 and 1 (JPG is lossy, so a JPG is never taken for a mask);
//  - anything else is Picture8Bit with values 0..255.
Volume read_image(const std::string& path);

// Writes 8-bit pictures, row-major, `width` pixels per row. Atomic (temp + rename,
// nn/text_file.h): a failed write throws covidrate::Error with the reason and
// leaves no file.
void write_png_gray(const std::string& path, const uint8_t* pixels, int64_t width, int64_t height);
void write_png_rgb(const std::string& path, const uint8_t* rgb, int64_t width, int64_t height);

}  // namespace covidrate::data
