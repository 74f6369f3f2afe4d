// Checks the image size written inside compressed pixel data against the
// DICOM header before GDCM decodes it. GDCM sizes its output from the header
// but its JPEG 2000 codec copies what the codestream declares: a codestream
// wider than the header overruns the buffer (found by fuzz_dicom). Internal
// to the DICOM reader.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace covidrate::data::dicom {

struct ExpectedImage {
  int64_t columns, rows, samples, bits_allocated;
};

// `fragment` is one fragment of encapsulated pixel data. If it starts a JPEG
// 2000 codestream (raw or in a JP2 box) or a JPEG / JPEG-LS frame, its declared
// width, height, components and precision must fit `expected`; throws
// covidrate::Error naming `file` otherwise. Returns whether a size was found.
bool check_codestream(const std::string& file, std::string_view fragment, const ExpectedImage& expected);

// `fragment` is one frame of RLE Lossless pixel data (PS3.5 Annex G): its
// 64-byte header must name as many segments as the image has bytes per pixel
// (samples x bytes per sample, at most 15), the first at byte 64, each after
// the one before and inside the fragment. GDCM trusts the segment count and
// reads offsets and segments past the fragment (found by fuzz_dicom: a count
// of 151060482 crashed it); throws covidrate::Error naming `file`.
void check_rle_frame(const std::string& file, std::string_view fragment, const ExpectedImage& expected);

}  // namespace covidrate::data::dicom
