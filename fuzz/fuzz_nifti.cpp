// libFuzzer target: read_nifti on arbitrary bytes (plain or gzip) must return
// a volume or throw covidrate::Error -- never crash, hang, leak or touch bad memory.
#include <cstdint>

#include "data/nifti.h"
#include "fuzz/fuzz_input_file.h"
#include "nn/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = write_fuzz_input(data, size, ".nii");
  try {
    const covidrate::data::Volume v = covidrate::data::read_nifti(path);
    if (static_cast<int64_t>(v.voxels.size()) != v.voxel_count()) __builtin_trap();
  } catch (const covidrate::Error&) {
  }
  return 0;
}
