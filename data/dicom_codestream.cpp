// JPEG 2000 SIZ (ISO 15444-1 A.5.1) and JPEG / JPEG-LS SOF (ISO 10918-1 B.2.2,
// ISO 14495-1 C.2.2) headers, read just far enough to learn the image size, and
// the RLE header (DICOM PS3.5 G.5).
#include "data/dicom_codestream.h"

#include <ios>

#include "nn/error.h"

namespace covidrate::data::dicom {
namespace {

uint32_t big16(std::string_view b, size_t at) {
  return uint32_t(uint8_t(b[at])) << 8 | uint8_t(b[at + 1]);
}
uint32_t big32(std::string_view b, size_t at) { return big16(b, at) << 16 | big16(b, at + 2); }

void check_size(const std::string& file, const char* codec, int64_t columns, int64_t rows, int64_t samples,
                int64_t precision, const ExpectedImage& e) {
  CR_CHECK(columns == e.columns && rows == e.rows && samples == e.samples && precision >= 1 &&
               precision <= e.bits_allocated,
           file << ": the " << codec << " data is " << columns << " x " << rows << " with " << samples
                << " component(s) of " << precision << " bits, the header says " << e.columns << " x " << e.rows
                << " with " << e.samples << " of at most " << e.bits_allocated << " bits");
}

// A raw JPEG 2000 codestream starting at `at`: SOC, then SIZ.
bool check_j2k(const std::string& file, std::string_view b, size_t at, const ExpectedImage& e) {
  CR_CHECK(b.size() >= at + 43, file << ": truncated JPEG 2000 header");
  CR_CHECK(big16(b, at + 2) == 0xff51, file << ": JPEG 2000 codestream without its SIZ marker");
  const size_t siz = at + 4;  // Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, tiles..., Csiz
  const int64_t x = big32(b, siz + 4), y = big32(b, siz + 8), x0 = big32(b, siz + 12), y0 = big32(b, siz + 16);
  const int64_t components = big16(b, siz + 36);
  CR_CHECK(components >= 1 && b.size() >= siz + 38 + 3 * size_t(components),
           file << ": malformed JPEG 2000 SIZ marker");
  for (int64_t c = 0; c < components; ++c) {
    const size_t comp = siz + 38 + 3 * size_t(c);  // Ssiz, XRsiz, YRsiz
    CR_CHECK(uint8_t(b[comp + 1]) == 1 && uint8_t(b[comp + 2]) == 1,
             file << ": subsampled JPEG 2000 components are not supported");
    check_size(file, "JPEG 2000", x - x0, y - y0, components, (uint8_t(b[comp]) & 0x7f) + 1, e);
  }
  return true;
}

// JPEG and JPEG-LS: the marker segments from SOI to the first scan must be
// contiguous and complete. libjpeg only warns about stray bytes between
// markers, an unknown JFIF version or Adobe transform, and GDCM turns any
// warning while reading the header into an assertion (found by fuzz_dicom).
bool check_jpeg(const std::string& file, std::string_view b, const ExpectedImage& e) {
  bool frame = false;
  for (size_t at = 2;;) {  // after SOI
    CR_CHECK(at + 4 <= b.size(), file << ": truncated JPEG header");
    CR_CHECK(uint8_t(b[at]) == 0xff, file << ": stray bytes between JPEG markers at byte " << at << " of its data");
    const uint8_t marker = uint8_t(b[at + 1]);
    if (marker == 0xff) {  // fill byte before a marker
      ++at;
      continue;
    }
    CR_CHECK(marker != 0x00 && marker != 0x01 && !(marker >= 0xd0 && marker <= 0xd9),
             file << ": unexpected JPEG marker 0xff" << std::hex << int(marker) << " before the first scan");
    const size_t length = big16(b, at + 2);
    CR_CHECK(length >= 2 && at + 2 + length <= b.size(), file << ": truncated JPEG marker segment");
    const std::string_view segment = b.substr(at + 4, length - 2);
    const bool sof = (marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc) ||
                     marker == 0xf7;  // SOF55: JPEG-LS
    if (sof) {
      CR_CHECK(!frame && segment.size() >= 6, file << ": malformed JPEG frame header");
      const int64_t precision = uint8_t(segment[0]), rows = big16(segment, 1), columns = big16(segment, 3);
      const int64_t components = uint8_t(segment[5]);
      // GDCM's JPEG codecs come in 8, 12 and 16 bits and assert on any other
      // precision (found by the fuzz replay); JPEG-LS takes any from 2 to 16.
      CR_CHECK(marker == 0xf7 || precision == 8 || precision == 12 || precision == 16,
               file << ": JPEG data of " << precision << "-bit precision (8, 12 or 16 are decoded)");
      // A JPEG may leave its height to a later DNL marker (rows = 0).
      check_size(file, marker == 0xf7 ? "JPEG-LS" : "JPEG", columns, rows == 0 ? e.rows : rows, components,
                 precision, e);
      frame = true;
    }
    if (marker == 0xe0 && segment.size() >= 6 && segment.substr(0, 5) == std::string_view("JFIF\0", 5))
      CR_CHECK(uint8_t(segment[5]) == 1, file << ": unknown JFIF version in the JPEG data");
    if (marker == 0xee && segment.size() >= 12 && segment.substr(0, 5) == "Adobe")
      CR_CHECK(uint8_t(segment[11]) <= 2, file << ": unknown Adobe colour transform in the JPEG data");
    if (marker == 0xda) {
      CR_CHECK(frame, file << ": a JPEG scan before its frame header");
      return true;
    }
    at += 2 + length;
  }
}

uint32_t little32(std::string_view b, size_t at) {
  return uint32_t(uint8_t(b[at])) | uint32_t(uint8_t(b[at + 1])) << 8 | uint32_t(uint8_t(b[at + 2])) << 16 |
         uint32_t(uint8_t(b[at + 3])) << 24;
}

}  // namespace

void check_rle_frame(const std::string& file, std::string_view b, const ExpectedImage& e) {
  constexpr size_t kHeader = 64;  // the segment count and 15 offsets, 32-bit little endian
  CR_CHECK(b.size() >= kHeader, file << ": RLE frame of " << b.size() << " bytes, shorter than its 64-byte header");
  const int64_t segments = little32(b, 0);
  const int64_t expected = e.samples * ((e.bits_allocated + 7) / 8);
  CR_CHECK(segments == expected && segments <= 15,
           file << ": the RLE header names " << segments << " segment(s); the image has " << expected
                << " byte(s) per pixel (" << e.samples << " sample(s) of " << e.bits_allocated << " bits)");
  size_t previous = 0;
  for (int64_t i = 0; i < segments; ++i) {
    const size_t offset = little32(b, 4 + 4 * size_t(i));
    CR_CHECK((i == 0 ? offset == kHeader : offset > previous) && offset < b.size(),
             file << ": RLE segment " << i << " starts at byte " << offset << " of a " << b.size()
                  << "-byte frame (the first must start at 64, each after the one before)");
    previous = offset;
  }
}

bool check_codestream(const std::string& file, std::string_view b, const ExpectedImage& e) {
  if (b.size() >= 4 && big16(b, 0) == 0xff4f) return check_j2k(file, b, 0, e);
  if (b.size() >= 12 && big32(b, 0) == 12 && b.substr(4, 4) == "jP  ") {
    // JP2 file format: the codestream is the content of the 'jp2c' box.
    const size_t box = b.find("jp2c");
    CR_CHECK(box != std::string_view::npos, file << ": JP2 data without a codestream box");
    return check_j2k(file, b, box + 4, e);
  }
  if (b.size() >= 4 && big16(b, 0) == 0xffd8) return check_jpeg(file, b, e);
  return false;
}

}  // namespace covidrate::data::dicom
