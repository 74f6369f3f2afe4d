// Header fields and pixel decoding of one DICOM file, through GDCM.
#include "data/dicom_file.h"

#if !COVIDRATE_HAVE_GDCM
#error "the DICOM reader needs GDCM: install libgdcm-dev (tools/setup.sh) and re-run cmake"
#endif

#include <gdcmDicts.h>
#include <gdcmGlobal.h>
#include <gdcmImage.h>
#include <gdcmImageReader.h>
#include <gdcmReader.h>
#include <gdcmSequenceOfItems.h>
#include <gdcmStringFilter.h>
#include <gdcmTrace.h>

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

#include "data/dicom_codestream.h"
#include "data/dicom_structure.h"
#include "nn/error.h"

namespace covidrate::data::dicom {
namespace {

// GDCM prints warnings for every oddity of every file to stderr; our errors
// already carry the file and the cause, so its chatter is switched off once.
void silence_gdcm() {
  static const bool silenced = [] {
    gdcm::Trace::SetDebug(false);
    gdcm::Trace::SetWarning(false);
    gdcm::Trace::SetError(false);
    return true;
  }();
  (void)silenced;
}

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  const auto last = s.find_last_not_of(" \t\r\n");
  return s.substr(first, last - first + 1);
}

// A multi-valued numeric attribute ("-158.1\-179.0\-75.7") as numbers; empty if
// the attribute is absent. Throws if any value is not a finite number.
std::vector<double> numbers(const gdcm::StringFilter& sf, uint16_t group, uint16_t element,
                            const std::string& file, const char* name) {
  const std::string text = trim(sf.ToString(gdcm::Tag(group, element)));
  std::vector<double> values;
  if (text.empty()) return values;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find('\\', begin);
    if (end == std::string::npos) end = text.size();
    const std::string item = trim(text.substr(begin, end - begin));
    double v = 0;
    const char* first = item.data();
    if (!item.empty() && item[0] == '+') ++first;  // DS allows a leading '+'; from_chars does not
    const auto [ptr, ec] = std::from_chars(first, item.data() + item.size(), v);
    CR_CHECK(ec == std::errc() && ptr == item.data() + item.size() && std::isfinite(v),
             file << ": " << name << " has a value that is not a number: '" << item << "'");
    values.push_back(v);
    begin = end + 1;
  }
  return values;
}

template <size_t N>
std::optional<std::array<double, N>> fixed_numbers(const gdcm::StringFilter& sf, uint16_t group,
                                                   uint16_t element, const std::string& file,
                                                   const char* name) {
  const std::vector<double> v = numbers(sf, group, element, file, name);
  if (v.empty()) return std::nullopt;
  CR_CHECK(v.size() == N, file << ": " << name << " has " << v.size() << " values, expected " << N);
  std::array<double, N> out{};
  std::copy(v.begin(), v.end(), out.begin());
  return out;
}

// One stored sample (BitsAllocated 8, 16 or 32) with the bits above BitsStored
// dropped and the sign extended: old scanners leave overlay bits up there.
struct SampleReader {
  int bytes;
  int bits_stored;
  int shift;  // HighBit + 1 - BitsStored: where the stored bits start
  bool is_signed;

  int64_t operator()(const char* p) const {
    uint32_t raw = 0;
    if (bytes == 1) raw = static_cast<uint8_t>(*p);
    else if (bytes == 2) { uint16_t v; std::memcpy(&v, p, 2); raw = v; }
    else std::memcpy(&raw, p, 4);
    raw >>= shift;
    const uint64_t mask = (uint64_t{1} << bits_stored) - 1;
    uint64_t value = raw & mask;
    if (is_signed && (value >> (bits_stored - 1)) & 1) return static_cast<int64_t>(value) - int64_t(mask) - 1;
    return static_cast<int64_t>(value);
  }
};

// The whole file, checked to be a complete DICOM stream before GDCM sees it
// (see dicom_structure.h for why), cut after its last element.
struct CheckedFile {
  std::string bytes;
  Structure structure;
};
CheckedFile read_checked(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  CR_CHECK(in, file << ": cannot open");
  CheckedFile f;
  // One read of the file's size: istreambuf_iterator went byte by byte, 6 % of
  // reading a series. A file that grows meanwhile is cut at the size seen;
  // check_structure then finds what the cut left.
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  CR_CHECK(size >= 0, file << ": cannot tell its size");
  in.seekg(0, std::ios::beg);
  f.bytes.resize(static_cast<size_t>(size));
  in.read(f.bytes.data(), size);
  f.bytes.resize(static_cast<size_t>(in.gcount()));
  CR_CHECK(!in.bad(), file << ": read error");
  f.structure = check_structure(file, f.bytes);
  f.bytes.resize(f.structure.end);
  return f;
}

// GDCM reads the image attributes through typed accessors that assert the
// element's value representation matches the dictionary: a file with, say,
// Columns stored as SS aborts the program (found by fuzz_dicom). Those
// elements, nested ones included, must carry their dictionary VR. Other
// elements are left alone: real files get VRs wrong elsewhere (the TCGA series
// stores (0028,0303) as SH, not CS) and GDCM does not mind there.
bool read_by_gdcm_image_helper(const gdcm::Tag& t) {
  static const gdcm::Tag tags[] = {
      {0x0018, 0x0050}, {0x0018, 0x0088}, {0x0018, 0x1164}, {0x0018, 0x2010}, {0x0018, 0x602c}, {0x0018, 0x602e},
      {0x0020, 0x0032}, {0x0020, 0x0037}, {0x0028, 0x0002}, {0x0028, 0x0006}, {0x0028, 0x0008}, {0x0028, 0x0009},
      {0x0028, 0x0010}, {0x0028, 0x0011}, {0x0028, 0x0030}, {0x0028, 0x0034}, {0x0028, 0x0100}, {0x0028, 0x0101},
      {0x0028, 0x0102}, {0x0028, 0x0103}, {0x0028, 0x0120}, {0x0028, 0x1050}, {0x0028, 0x1051}, {0x0028, 0x1052},
      {0x0028, 0x1053}, {0x0028, 0x1101}, {0x0028, 0x1102}, {0x0028, 0x1103}, {0x0028, 0x3002}, {0x3002, 0x0011},
      {0x0028, 0x2110},  // Lossy Image Compression, read when a lossy JPEG is decoded (found by the fuzz replay)
  };
  return std::find(std::begin(tags), std::end(tags), t) != std::end(tags);
}

void check_image_vrs(const std::string& file, const gdcm::DataSet& ds, int depth) {
  CR_CHECK(depth < 16, file << ": sequences nested too deep");
  const gdcm::Dicts& dicts = gdcm::Global::GetInstance().GetDicts();
  for (auto it = ds.Begin(); it != ds.End(); ++it) {
    const gdcm::DataElement& de = *it;
    const gdcm::Tag& tag = de.GetTag();
    if (read_by_gdcm_image_helper(tag) && de.GetVR() != gdcm::VR::INVALID) {
      const gdcm::VR expected = dicts.GetDictEntry(tag).GetVR();
      CR_CHECK(expected.Compatible(de.GetVR()), file << ": element " << tag << " has value representation "
                                                     << de.GetVR() << ", the standard says " << expected);
    }
    // Functional groups nest these elements; only sequences GDCM has already
    // parsed are visited, raw bytes are not reinterpreted.
    const gdcm::Value* value = de.IsEmpty() ? nullptr : &de.GetValue();
    if (const auto* items = dynamic_cast<const gdcm::SequenceOfItems*>(value)) {
      for (gdcm::SequenceOfItems::SizeType k = 1; k <= items->GetNumberOfItems(); ++k)
        check_image_vrs(file, items->GetItem(k).GetNestedDataSet(), depth + 1);
    }
  }
}

}  // namespace

std::string cut_short_reason(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in.is_open()) return "";
  unsigned char head[132] = {};
  in.read(reinterpret_cast<char*>(head), sizeof head);
  const auto got = static_cast<size_t>(in.gcount());
  if (got == 0) return "empty";
  const bool zeros = std::all_of(head, head + std::min<size_t>(got, 128), [](unsigned char b) { return b == 0; });
  if (!zeros) return "";
  if (got < 128) return std::to_string(got) + " bytes, all zero";
  return std::memcmp(head + 128, "DICM", 4) == 0 ? "" : "a DICOM preamble without the DICM marker after it";
}

bool has_dicom_magic(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  char buffer[132] = {};
  if (!in.read(buffer, sizeof buffer)) return false;
  return std::memcmp(buffer + 128, "DICM", 4) == 0;
}

bool starts_like_dicom_stream(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  unsigned char head[4] = {0xff, 0xff, 0xff, 0xff};
  in.read(reinterpret_cast<char*>(head), sizeof head);
  return (head[0] == 0x02 || head[0] == 0x08) && head[1] == 0x00 && head[3] == 0x00;
}

std::optional<FileHeader> read_header(const std::string& file) {
  silence_gdcm();
  const bool claims_dicom = has_dicom_magic(file) ||
                            (file.size() > 4 && (file.ends_with(".dcm") || file.ends_with(".DCM")));
  if (!claims_dicom) {
    CR_CHECK(std::ifstream(file, std::ios::binary).is_open(), "cannot read " << file << ": " << std::strerror(errno));
    // Other files are not read at all (an empty or cut-short one: cut_short_reason).
    if (!starts_like_dicom_stream(file)) return std::nullopt;
  }
  std::string bytes;
  try {
    bytes = read_checked(file).bytes;
  } catch (const Error&) {
    if (claims_dicom) throw;
    return std::nullopt;  // some other kind of file beside the series
  }
  std::istringstream stream(std::move(bytes));
  gdcm::Reader reader;
  reader.SetStream(stream);
  if (!reader.ReadUpToTag(gdcm::Tag(0x7fe0, 0x0010))) {
    CR_CHECK(!claims_dicom, file << ": not a readable DICOM file (GDCM cannot parse its header)");
    return std::nullopt;
  }
  check_image_vrs(file, reader.GetFile().GetDataSet(), 0);
  gdcm::StringFilter sf;
  sf.SetFile(reader.GetFile());
  FileHeader h;
  h.file = file;
  const auto text = [&](uint16_t g, uint16_t e) { return trim(sf.ToString(gdcm::Tag(g, e))); };
  const auto integer = [&](uint16_t g, uint16_t e, const char* name, int64_t fallback) -> int64_t {
    const std::vector<double> v = numbers(sf, g, e, file, name);
    if (v.empty()) return fallback;
    CR_CHECK(v.size() == 1 && v[0] == std::floor(v[0]) && std::fabs(v[0]) < 1e9,
             file << ": " << name << " is not an integer");
    return static_cast<int64_t>(v[0]);
  };
  h.rows = integer(0x0028, 0x0010, "Rows", 0);
  h.columns = integer(0x0028, 0x0011, "Columns", 0);
  // No image size: a DICOMDIR, a structured report, a presentation state...
  if (h.rows == 0 && h.columns == 0) return std::nullopt;
  CR_CHECK(h.rows > 0 && h.columns > 0 && h.rows <= 65535 && h.columns <= 65535,
           file << ": implausible image size " << h.columns << " x " << h.rows);
  h.frames = integer(0x0028, 0x0008, "NumberOfFrames", 1);
  CR_CHECK(h.frames >= 1 && h.frames <= 100000, file << ": implausible NumberOfFrames " << h.frames);
  h.bits_allocated = integer(0x0028, 0x0100, "BitsAllocated", 16);
  CR_CHECK(h.bits_allocated == 8 || h.bits_allocated == 16 || h.bits_allocated == 32,
           file << ": BitsAllocated " << h.bits_allocated << " is not supported (8, 16 or 32)");
  // Type 1 (PS3.3 C.7.6.3). GDCM's copy of 8-bit samples asserts that all 8
  // bits are stored, and a missing value reads as 0 (found by the fuzz replay).
  const int64_t bits_stored = integer(0x0028, 0x0101, "BitsStored", 0);
  CR_CHECK(bits_stored >= 1 && bits_stored <= h.bits_allocated && (h.bits_allocated != 8 || bits_stored == 8),
           file << ": BitsStored " << (bits_stored ? std::to_string(bits_stored) : "missing") << " with BitsAllocated "
                << h.bits_allocated << " (8-bit samples must store 8; at most BitsAllocated otherwise)");
  h.samples_per_pixel = integer(0x0028, 0x0002, "SamplesPerPixel", 1);
  CR_CHECK(h.samples_per_pixel == 1 || h.samples_per_pixel == 3,
           file << ": SamplesPerPixel " << h.samples_per_pixel << " is not supported (1 or 3)");
  // Only 0 (interleaved) and 1 (planes) exist; GDCM asserts on any other value
  // (found by the fuzz replay).
  const int64_t planar = integer(0x0028, 0x0006, "PlanarConfiguration", 0);
  CR_CHECK(planar == 0 || planar == 1, file << ": PlanarConfiguration " << planar << " is neither 0 nor 1");

  h.series_uid = text(0x0020, 0x000e);
  h.study_uid = text(0x0020, 0x000d);
  h.patient_id = text(0x0010, 0x0020);
  h.convolution_kernel = text(0x0018, 0x1210);
  h.modality = text(0x0008, 0x0060);
  h.series_description = text(0x0008, 0x103e);
  h.image_type = text(0x0008, 0x0008);
  h.sop_instance_uid = text(0x0008, 0x0018);
  h.enhanced = reader.GetFile().GetDataSet().FindDataElement(gdcm::Tag(0x5200, 0x9229));
  h.transfer_syntax = text(0x0002, 0x0010);
  h.position = fixed_numbers<3>(sf, 0x0020, 0x0032, file, "ImagePositionPatient");
  h.orientation = fixed_numbers<6>(sf, 0x0020, 0x0037, file, "ImageOrientationPatient");
  if (const auto ps = fixed_numbers<2>(sf, 0x0028, 0x0030, file, "PixelSpacing")) {
    CR_CHECK((*ps)[0] > 0 && (*ps)[1] > 0, file << ": PixelSpacing must be positive");
    h.pixel_spacing = *ps;
    h.has_pixel_spacing = true;
  }
  const std::vector<double> between = numbers(sf, 0x0018, 0x0088, file, "SpacingBetweenSlices");
  const std::vector<double> thickness = numbers(sf, 0x0018, 0x0050, file, "SliceThickness");
  if (!between.empty() && between[0] > 0) h.slice_spacing = between[0];
  else if (!thickness.empty() && thickness[0] > 0) h.slice_spacing = thickness[0];
  const std::vector<double> slope = numbers(sf, 0x0028, 0x1053, file, "RescaleSlope");
  const std::vector<double> intercept = numbers(sf, 0x0028, 0x1052, file, "RescaleIntercept");
  h.has_rescale = !slope.empty() || !intercept.empty();
  h.has_intercept = !intercept.empty();
  h.signed_values = integer(0x0028, 0x0103, "PixelRepresentation", 0) == 1;
  if (!slope.empty()) h.slope = slope[0];
  if (!intercept.empty()) h.intercept = intercept[0];
  CR_CHECK(h.slope != 0, file << ": RescaleSlope is 0");
  const std::vector<double> padding = numbers(sf, 0x0028, 0x0120, file, "PixelPaddingValue");
  if (!padding.empty()) h.padding_value = padding[0];
  return h;
}

namespace {
FrameGeometry geometry_of(const gdcm::Image& image) {
  FrameGeometry g;
  for (int k = 0; k < 3; ++k) g.origin[k] = image.GetOrigin(k);
  for (int k = 0; k < 6; ++k) g.orientation[k] = image.GetDirectionCosines(k);
  for (int k = 0; k < 3; ++k) g.spacing[k] = image.GetSpacing(k);
  return g;
}
}  // namespace

FrameGeometry decode_pixels(const FileHeader& h, float* out) {
  silence_gdcm();
  CheckedFile checked = read_checked(h.file);
  // Before GDCM touches the pixel data (it decodes some already while reading).
  const ExpectedImage expected{h.columns, h.rows, h.samples_per_pixel, h.bits_allocated};
  const bool rle = checked.structure.transfer_syntax == "1.2.840.10008.1.2.5";
  for (const auto& [offset, length] : checked.structure.fragments) {
    const std::string_view fragment = std::string_view(checked.bytes).substr(offset, length);
    if (rle) check_rle_frame(h.file, fragment, expected);
    else check_codestream(h.file, fragment, expected);
  }
  std::istringstream stream(std::move(checked.bytes));
  gdcm::ImageReader reader;
  reader.SetStream(stream);
  const bool parsed = reader.Read();
  const gdcm::DataSet& ds = reader.GetFile().GetDataSet();
  CR_CHECK(ds.FindDataElement(gdcm::Tag(0x7fe0, 0x0010)), h.file << ": has no pixel data");
  CR_CHECK(parsed, h.file << ": GDCM cannot read the image (transfer syntax " << h.transfer_syntax << ")");
  const gdcm::Image& image = reader.GetImage();
  const gdcm::PixelFormat& format = image.GetPixelFormat();
  const int64_t frames = image.GetNumberOfDimensions() > 2 ? image.GetDimension(2) : 1;
  CR_CHECK(image.GetDimension(0) == h.columns && image.GetDimension(1) == h.rows && frames == h.frames &&
               format.GetSamplesPerPixel() == h.samples_per_pixel,
           h.file << ": the decoded image (" << image.GetDimension(0) << " x " << image.GetDimension(1) << " x "
                  << frames << ") disagrees with the header (" << h.columns << " x " << h.rows << " x "
                  << h.frames << ")");
  const int bits_allocated = format.GetBitsAllocated();
  const int bits_stored = format.GetBitsStored();
  // Minimal headers omit HighBit (GDCM then reports 0): the stored bits start at bit 0.
  const int high_bit = format.GetHighBit() + 1 < bits_stored ? bits_stored - 1 : format.GetHighBit();
  CR_CHECK(bits_allocated == 8 || bits_allocated == 16 || bits_allocated == 32,
           h.file << ": BitsAllocated " << bits_allocated << " is not supported (8, 16 or 32)");
  CR_CHECK(bits_stored >= 1 && bits_stored <= bits_allocated && high_bit < bits_allocated,
           h.file << ": inconsistent BitsStored " << bits_stored << " / HighBit " << high_bit);
  CR_CHECK(format.GetScalarType() != gdcm::PixelFormat::FLOAT32 &&
               format.GetScalarType() != gdcm::PixelFormat::FLOAT64,
           h.file << ": floating-point pixel data is not supported");

  const int64_t pixels = h.columns * h.rows * h.frames;
  const int64_t bytes = bits_allocated / 8;
  const int64_t samples = h.samples_per_pixel;
  // Uncompressed pixel data must hold every pixel the header promises.
  if (const gdcm::ByteValue* raw = ds.GetDataElement(gdcm::Tag(0x7fe0, 0x0010)).GetByteValue()) {
    CR_CHECK(static_cast<int64_t>(raw->GetLength()) >= pixels * samples * bytes,
             h.file << ": pixel data holds " << raw->GetLength() << " bytes, the header needs "
                    << pixels * samples * bytes);
  }
  std::vector<char> buffer(image.GetBufferLength());
  CR_CHECK(static_cast<int64_t>(buffer.size()) >= pixels * samples * bytes,
           h.file << ": pixel data holds " << buffer.size() << " bytes, the header needs "
                  << pixels * samples * bytes);
  CR_CHECK(image.GetBuffer(buffer.data()),
           h.file << ": cannot decode the pixel data (transfer syntax " << h.transfer_syntax
                  << "; corrupt, truncated or unsupported)");

  const SampleReader sample{static_cast<int>(bytes), bits_stored, high_bit + 1 - bits_stored,
                            format.GetPixelRepresentation() == 1};
  // Colour samples are either interleaved (RGBRGB...) or one plane per channel.
  // RGB becomes the mean of its channels; luma/chroma (YBR) keeps its luma.
  const bool planar = samples == 3 && image.GetPlanarConfiguration() == 1;
  const gdcm::PhotometricInterpretation::PIType colour = image.GetPhotometricInterpretation();
  const bool luma_first = colour == gdcm::PhotometricInterpretation::YBR_FULL ||
                          colour == gdcm::PhotometricInterpretation::YBR_ICT ||
                          colour == gdcm::PhotometricInterpretation::YBR_RCT;
  CR_CHECK(samples == 1 || luma_first || colour == gdcm::PhotometricInterpretation::RGB,
           h.file << ": colour model " << gdcm::PhotometricInterpretation::GetPIString(colour)
                  << " is not supported (RGB, YBR_FULL, YBR_ICT, YBR_RCT)");
  const int64_t channels_averaged = luma_first ? 1 : 3;
  const bool ct = h.is_ct();
  if (samples == 1 && bytes == 2) {
    // Nearly every CT: one 16-bit sample a pixel. The general loop below reads
    // any layout through SampleReader's branches, and took 7 % of reading a
    // series; here the shift, mask, sign and padding are fixed before the loop.
    const unsigned shift = static_cast<unsigned>(sample.shift);
    const uint32_t mask = (uint32_t{1} << bits_stored) - 1, sign = uint32_t{1} << (bits_stored - 1);
    const bool is_signed = sample.is_signed;
    const bool pad = ct && h.padding_value.has_value();
    const double padding = pad ? *h.padding_value : 0;
    const double slope = h.slope, intercept = h.intercept;
    for (int64_t i = 0; i < pixels; ++i) {
      uint16_t raw;
      std::memcpy(&raw, buffer.data() + i * 2, 2);
      const uint32_t bits = (uint32_t{raw} >> shift) & mask;
      const int64_t stored = is_signed && (bits & sign) ? int64_t(bits) - int64_t(mask) - 1 : int64_t(bits);
      double value = static_cast<double>(stored) * slope + intercept;
      if (ct && ((pad && static_cast<double>(stored) == padding) || value < -1024)) value = -1024;
      out[i] = static_cast<float>(value);
    }
    return geometry_of(image);
  }
  for (int64_t frame = 0; frame < h.frames; ++frame) {
    const int64_t frame_pixels = h.columns * h.rows;
    const char* base = buffer.data() + frame * frame_pixels * samples * bytes;
    for (int64_t i = 0; i < frame_pixels; ++i) {
      int64_t stored = 0;
      double value = 0;
      if (samples == 1) {
        stored = sample(base + i * bytes);
        value = static_cast<double>(stored);
      } else {
        for (int64_t c = 0; c < channels_averaged; ++c) {
          const int64_t at = planar ? c * frame_pixels + i : i * 3 + c;
          value += static_cast<double>(sample(base + at * bytes));
        }
        value /= static_cast<double>(channels_averaged);
      }
      value = value * h.slope + h.intercept;
      if (ct && ((h.padding_value && samples == 1 && stored == *h.padding_value) || value < -1024)) value = -1024;
      out[frame * frame_pixels + i] = static_cast<float>(value);
    }
  }

  return geometry_of(image);
}

}  // namespace covidrate::data::dicom
