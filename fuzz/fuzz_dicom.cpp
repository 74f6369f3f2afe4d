// libFuzzer target: read_dicom_series on arbitrary bytes must return a volume
// or throw covidrate::Error -- never crash, hang, leak or touch bad memory.
#include <cstdint>

#include "data/dicom.h"
#include "fuzz/fuzz_input_file.h"
#include "nn/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // .dcm: the reader then treats unparseable bytes as a broken DICOM file
  // (an Error), the path the fuzzer should explore.
  const std::string path = write_fuzz_input(data, size, ".dcm");
  try {
    const covidrate::data::Volume v = covidrate::data::read_dicom_series(path);
    if (static_cast<int64_t>(v.voxels.size()) != v.voxel_count()) __builtin_trap();
  } catch (const covidrate::Error&) {
  }
  return 0;
}
