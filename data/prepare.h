// Input preparation: how one slice of any size becomes the S x S input of the
// network, and how the network's S x S answer goes back onto the slice.
//
//   1. pad the slice to a square (centred; image and mask pad with 0), so that
//      resizing keeps the aspect ratio and lesions keep their shape;
//   2. resize the square to S x S: bilinear for the image, nearest for masks
//      (a mask must stay binary);
//   3. when a lung mask is given, set every non-lung pixel to 0 (the paper feeds
//      the network the lungs alone);
//   4. standardize the image by its own mean and standard deviation
//      (data::standardize; the reference code scales by min and max instead,
//      docs/training.md says why not here).
//
// Resizing uses pixel centres (a pixel covers [i, i+1)), as OpenCV's and
// PyTorch's align_corners=false, so the forward and inverse maps agree.
#pragma once
#include <cstdint>
#include <vector>

#include "data/dataset.h"
#include "data/volume.h"

namespace covidrate::data {

// Where an nx x ny slice sits in the S x S network input.
struct Placement {
  int64_t nx = 0, ny = 0;      // the original slice
  int64_t side = 0;            // max(nx, ny): the padded square
  int64_t pad_x = 0, pad_y = 0;  // columns / rows of padding before the slice
  int64_t size = 0;            // S
};
Placement placement_for(int64_t nx, int64_t ny, int64_t size);

// One slice ready for the network, row-major S x S.
struct PreparedSlice {
  std::vector<float> image;  // standardized (mean 0, std 1)
  std::vector<float> mask;   // 0 / 1; empty when no mask was given
  Placement placement;
};

// Steps 1-4 above. `image` is one slice in the input domain (data::to_input_domain);
// `mask` and `lungs` are null or on the same grid (non-zero = lesion / lung).
PreparedSlice prepare_slice(const Volume& image, const Volume* mask, const Volume* lungs,
                            int64_t size);
// The same for a data set sample (its lungs when it has them).
PreparedSlice prepare_sample(const Sample& sample, int64_t size);

// The inverse of steps 1-2 for an S x S map of probabilities: the value at each
// pixel of the original nx x ny grid (bilinear, so thresholding at 0.5 after
// the mapping gives smooth outlines). Returns nx * ny values, row-major.
std::vector<float> to_original_grid(const float* prediction, const Placement& placement);

// Bilinear (pixel-centre) resize of a row-major image, exposed for tests and tools.
std::vector<float> resize_bilinear(const float* src, int64_t nx, int64_t ny, int64_t out_nx,
                                   int64_t out_ny);

}  // namespace covidrate::data
