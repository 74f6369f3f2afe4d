// Dispatch on what a path holds: its first bytes first, its name second.
#include "data/read_any.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "data/dicom.h"
#include "data/image2d.h"
#include "data/nifti.h"
#include "nn/error.h"

namespace covidrate::data {
namespace {

bool ends_with_ci(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  if (s.size() < n) return false;
  for (size_t k = 0; k < n; ++k)
    if (std::tolower(static_cast<unsigned char>(s[s.size() - n + k])) != suffix[k]) return false;
  return true;
}

}  // namespace

InputKind input_kind(const std::string& path) {
  std::error_code ec;
  CR_CHECK(std::filesystem::exists(path, ec), path << ": no such file or folder");
  if (std::filesystem::is_directory(path, ec)) return InputKind::DicomSeries;

  unsigned char head[8] = {};
  std::ifstream(path, std::ios::binary).read(reinterpret_cast<char*>(head), sizeof head);
  const bool png = std::memcmp(head, "\x89PNG\r\n\x1a\n", 8) == 0;
  const bool jpg = head[0] == 0xff && head[1] == 0xd8 && head[2] == 0xff;
  const bool gzip = head[0] == 0x1f && head[1] == 0x8b;
  uint32_t header_size = 0;
  std::memcpy(&header_size, head, 4);
  const uint32_t swapped = __builtin_bswap32(header_size);
  const bool nifti_header = header_size == 348 || header_size == 540 || swapped == 348 || swapped == 540;

  if (png || jpg) return InputKind::Picture;
  if (has_nifti_extension(path) || nifti_header || (gzip && ends_with_ci(path, ".gz"))) return InputKind::Nifti;
  if (looks_like_dicom_file(path) || ends_with_ci(path, ".dcm")) return InputKind::DicomSeries;
  // Named as a picture but not one (empty, cut short, something else renamed):
  // taken for a picture, so that reading it says what is wrong instead of a
  // folder of slices silently lacking it.
  if (ends_with_ci(path, ".png") || ends_with_ci(path, ".jpg") || ends_with_ci(path, ".jpeg"))
    return InputKind::Picture;
  return InputKind::Unknown;
}

const char* to_string(InputKind kind) {
  switch (kind) {
    case InputKind::DicomSeries: return "DICOM";
    case InputKind::Nifti: return "NIfTI";
    case InputKind::Picture: return "picture";
    case InputKind::Unknown: break;
  }
  return "unknown";
}

Volume read_any(const std::string& path) {
  switch (input_kind(path)) {
    case InputKind::DicomSeries: return read_dicom_series(path);
    case InputKind::Nifti: return read_nifti(path);
    case InputKind::Picture: return read_image(path);
    case InputKind::Unknown: break;
  }
  // DICOM without the Part 10 preamble has no magic at all: let GDCM try.
  try {
    return read_dicom_series(path);
  } catch (const Error&) {
    CR_FAIL(path << ": not a DICOM, NIfTI, PNG or JPG file");
  }
}

void check_distinct_stems(const std::vector<std::string>& pictures, const std::string& command) {
  std::map<std::string, const std::string*> seen;
  for (const std::string& path : pictures) {
    const auto [at, fresh] = seen.emplace(std::filesystem::path(path).stem().string(), &path);
    CR_CHECK(fresh, command << ": " << *at->second << " and " << path << " share the name '" << at->first
                            << "', and so would their masks (masks/" << at->first << ".png): rename or remove one");
  }
}

}  // namespace covidrate::data
