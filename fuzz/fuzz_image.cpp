// libFuzzer target: read_image (PNG or JPG through stb_image, and our own walk
// over a PNG's chunks for its palette) on arbitrary bytes must return a
// one-slice volume or throw covidrate::Error -- never crash, hang, leak or
// touch bad memory.
#include <cmath>
#include <cstdint>

#include "data/image2d.h"
#include "fuzz/fuzz_input_file.h"
#include "nn/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = write_fuzz_input(data, size, ".png");
  try {
    const covidrate::data::Volume v = covidrate::data::read_image(path);
    if (v.nz != 1 || static_cast<int64_t>(v.voxels.size()) != v.voxel_count()) __builtin_trap();
    for (const float x : v.voxels)
      if (!(x >= 0.f && x <= 255.f)) __builtin_trap();  // grey levels or palette indices
  } catch (const covidrate::Error&) {
  }
  return 0;
}
