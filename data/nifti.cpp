// NIfTI-1 and NIfTI-2: header parsing in either byte order, voxel conversion,
// and an atomic writer. The field offsets are those of nifti1.h and nifti2.h.
#include "data/nifti.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <vector>

#include "data/parallel_deflate.h"
#include "data/nifti_affine.h"
#include "kernels/cpu/threads.h"
#include "nn/error.h"
#include "nn/text_file.h"

namespace covidrate::data {
namespace {

constexpr int32_t kNifti1HeaderSize = 348;
constexpr int32_t kNifti2HeaderSize = 540;
// The largest volume we accept: 2^31 voxels (8 GiB as float). A header claiming
// more is far more likely corrupt than a real scan.
constexpr int64_t kMaxVoxels = int64_t{1} << 31;

// NIfTI datatype codes (nifti1.h).
enum DataType : int {
  kUInt8 = 2, kInt16 = 4, kInt32 = 8, kFloat32 = 16, kFloat64 = 64,
  kInt8 = 256, kUInt16 = 512, kUInt32 = 768, kInt64 = 1024, kUInt64 = 1280,
};

int bytes_per_voxel(int datatype) {
  switch (datatype) {
    case kUInt8: case kInt8: return 1;
    case kInt16: case kUInt16: return 2;
    case kInt32: case kUInt32: case kFloat32: return 4;
    case kFloat64: case kInt64: case kUInt64: return 8;
    default: return 0;
  }
}

// A gzip or plain file, read through zlib (gzread passes plain files through).
class InputFile {
 public:
  explicit InputFile(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    CR_CHECK(file_ != nullptr, path << ": cannot open");
  }
  ~InputFile() { gzclose(file_); }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  // Appends up to `count` bytes to `out`, growing it as data actually arrives,
  // so a header that lies about the size cannot make us allocate the lie.
  // Returns the number of bytes read.
  int64_t read(std::vector<char>& out, int64_t count) {
    int64_t got = 0;
    while (got < count) {
      const int64_t chunk = std::min<int64_t>(count - got, 1 << 24);
      const size_t before = out.size();
      out.resize(before + static_cast<size_t>(chunk));
      const int n = gzread(file_, out.data() + before, static_cast<unsigned>(chunk));
      if (n < 0) {
        int code = 0;
        const char* message = gzerror(file_, &code);
        CR_FAIL(path_ << ": corrupt compressed data (" << message << ")");
      }
      out.resize(before + static_cast<size_t>(n));
      got += n;
      if (n == 0) break;
    }
    return got;
  }

 private:
  std::string path_;
  gzFile file_;
};

// Fixed-offset fields of a header in either byte order.
class HeaderView {
 public:
  HeaderView(const char* bytes, bool swap) : bytes_(bytes), swap_(swap) {}
  template <typename T>
  T get(size_t offset) const {
    T value;
    std::memcpy(&value, bytes_ + offset, sizeof(T));
    if (swap_ && sizeof(T) > 1) {
      auto* p = reinterpret_cast<unsigned char*>(&value);
      std::reverse(p, p + sizeof(T));
    }
    return value;
  }

 private:
  const char* bytes_;
  bool swap_;
};

// The header fields we use, with NIfTI-1's float/short fields widened.
struct Header {
  int version = 1;
  bool swapped = false;  // stored in the other byte order than this machine's
  std::array<int64_t, 8> dim{};
  std::array<double, 8> pixdim{};
  int datatype = 0;
  int64_t vox_offset = 0;
  double scl_slope = 0, scl_inter = 0;
  int qform_code = 0, sform_code = 0;
  double quatern_b = 0, quatern_c = 0, quatern_d = 0;
  std::array<double, 3> qoffset{};
  nifti::Affine srow{};
  int xyzt_units = 0;
};

// Parses the first bytes of the file (at least 540 when available).
Header parse_header(const std::string& path, const std::vector<char>& bytes) {
  CR_CHECK(bytes.size() >= static_cast<size_t>(kNifti1HeaderSize),
           path << ": too short for a NIfTI header (" << bytes.size() << " bytes)");
  int32_t size;
  std::memcpy(&size, bytes.data(), 4);
  const int32_t swapped = static_cast<int32_t>(__builtin_bswap32(static_cast<uint32_t>(size)));
  const bool swap = size != kNifti1HeaderSize && size != kNifti2HeaderSize;
  if (swap) size = swapped;
  CR_CHECK(size == kNifti1HeaderSize || size == kNifti2HeaderSize,
           path << ": not a NIfTI file (header size field is neither 348 nor 540 in either byte order)");
  const HeaderView h(bytes.data(), swap);
  Header out;
  out.swapped = swap;
  if (size == kNifti1HeaderSize) {
    const std::string magic(bytes.data() + 344, 4);
    CR_CHECK(magic == std::string("n+1\0", 4) || magic == std::string("ni1\0", 4),
             path << ": bad NIfTI-1 magic");
    CR_CHECK(magic[1] == '+', path << ": a NIfTI-1 .hdr/.img pair is not supported; convert it to a single .nii");
    for (int k = 0; k < 8; ++k) out.dim[k] = h.get<int16_t>(40 + 2 * k);
    for (int k = 0; k < 8; ++k) out.pixdim[k] = h.get<float>(76 + 4 * k);
    out.datatype = h.get<int16_t>(70);
    // A float in NIfTI-1; checked before the cast, which is undefined for NaN
    // or out-of-range values (found by fuzz_nifti).
    const float offset = h.get<float>(108);
    CR_CHECK(std::isfinite(offset) && offset >= 0 && offset <= float(1 << 30) && offset == std::floor(offset),
             path << ": vox_offset " << offset << " is invalid");
    out.vox_offset = static_cast<int64_t>(offset);
    out.scl_slope = h.get<float>(112);
    out.scl_inter = h.get<float>(116);
    out.qform_code = h.get<int16_t>(252);
    out.sform_code = h.get<int16_t>(254);
    out.quatern_b = h.get<float>(256), out.quatern_c = h.get<float>(260), out.quatern_d = h.get<float>(264);
    for (int k = 0; k < 3; ++k) out.qoffset[k] = h.get<float>(268 + 4 * k);
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 4; ++c) out.srow[r][c] = h.get<float>(280 + 16 * r + 4 * c);
    out.xyzt_units = static_cast<unsigned char>(bytes[123]);
  } else {
    out.version = 2;
    CR_CHECK(bytes.size() >= static_cast<size_t>(kNifti2HeaderSize), path << ": truncated NIfTI-2 header");
    CR_CHECK(std::memcmp(bytes.data() + 4, "n+2\0", 4) == 0 || std::memcmp(bytes.data() + 4, "ni2\0", 4) == 0,
             path << ": bad NIfTI-2 magic");
    CR_CHECK(bytes[5] == '+', path << ": a NIfTI-2 .hdr/.img pair is not supported; convert it to a single .nii");
    out.datatype = h.get<int16_t>(12);
    for (int k = 0; k < 8; ++k) out.dim[k] = h.get<int64_t>(16 + 8 * k);
    for (int k = 0; k < 8; ++k) out.pixdim[k] = h.get<double>(104 + 8 * k);
    out.vox_offset = h.get<int64_t>(168);
    out.scl_slope = h.get<double>(176);
    out.scl_inter = h.get<double>(184);
    out.qform_code = h.get<int32_t>(344);
    out.sform_code = h.get<int32_t>(348);
    out.quatern_b = h.get<double>(352), out.quatern_c = h.get<double>(360), out.quatern_d = h.get<double>(368);
    for (int k = 0; k < 3; ++k) out.qoffset[k] = h.get<double>(376 + 8 * k);
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 4; ++c) out.srow[r][c] = h.get<double>(400 + 32 * r + 8 * c);
    out.xyzt_units = h.get<int32_t>(500);
  }
  return out;
}

// Voxel k of the data block, converted to double.
double voxel_value(const char* p, int datatype, bool swap) {
  const HeaderView v(p, swap);
  switch (datatype) {
    case kUInt8: return v.get<uint8_t>(0);
    case kInt8: return v.get<int8_t>(0);
    case kInt16: return v.get<int16_t>(0);
    case kUInt16: return v.get<uint16_t>(0);
    case kInt32: return v.get<int32_t>(0);
    case kUInt32: return v.get<uint32_t>(0);
    case kInt64: return static_cast<double>(v.get<int64_t>(0));
    case kUInt64: return static_cast<double>(v.get<uint64_t>(0));
    case kFloat32: return v.get<float>(0);
    default: return v.get<double>(0);
  }
}

// Masks are small non-negative integers; CT has air far below zero; 8-bit
// pictures fill 0..255; anything else (MR, PET) has no fixed scale.
Intensity guess_intensity(const std::vector<float>& voxels, int datatype) {
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  bool integral = true;
  for (float x : voxels) {
    lo = std::min(lo, x), hi = std::max(hi, x);
    integral = integral && x == std::nearbyint(x);
  }
  if (voxels.empty()) return Intensity::ScannerUnits;
  if (integral && lo >= 0 && hi <= 50) return Intensity::Label;
  if (lo <= -500) return Intensity::HounsfieldUnits;
  if (integral && datatype == kUInt8) return Intensity::Picture8Bit;
  return Intensity::ScannerUnits;
}

bool ends_with_ci(const std::string& s, const std::string& suffix) {
  if (s.size() < suffix.size()) return false;
  return std::equal(suffix.rbegin(), suffix.rend(), s.rbegin(),
                    [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; });
}

}  // namespace

bool has_nifti_extension(const std::string& path) {
  return ends_with_ci(path, ".nii") || ends_with_ci(path, ".nii.gz");
}

Volume read_nifti(const std::string& path) {
  InputFile file(path);
  std::vector<char> bytes;
  file.read(bytes, kNifti2HeaderSize);
  const Header h = parse_header(path, bytes);

  const int64_t rank = h.dim[0];
  CR_CHECK(rank >= 1 && rank <= 7, path << ": dim[0] = " << rank << " is not a rank between 1 and 7");
  int64_t volumes = 1;
  for (int k = 1; k <= rank; ++k) {
    CR_CHECK(h.dim[k] >= 1 && h.dim[k] <= kMaxVoxels, path << ": dim[" << k << "] = " << h.dim[k] << " is invalid");
    if (k >= 4) {
      volumes *= h.dim[k];
      CR_CHECK(volumes <= kMaxVoxels, path << ": too many volumes");
    }
  }
  Volume v;
  v.source = path;
  v.nx = h.dim[1];
  v.ny = rank >= 2 ? h.dim[2] : 1;
  v.nz = rank >= 3 ? h.dim[3] : 1;
  CR_CHECK(v.nx * v.ny <= kMaxVoxels && v.nx * v.ny * v.nz <= kMaxVoxels,
           path << ": claims " << v.nx << " x " << v.ny << " x " << v.nz << " voxels, more than the limit of "
                << kMaxVoxels);
  const int bytes_each = bytes_per_voxel(h.datatype);
  CR_CHECK(bytes_each > 0, path << ": NIfTI datatype " << h.datatype
                                << " is not supported (uint8/16/32/64, int8/16/32/64, float32, float64)");
  const int64_t header_size = h.version == 1 ? kNifti1HeaderSize : kNifti2HeaderSize;
  CR_CHECK(h.vox_offset >= header_size && h.vox_offset <= (int64_t{1} << 30),
           path << ": vox_offset " << h.vox_offset << " is invalid");

  // Only the first volume of a 4-D (or higher) file is read.
  const int64_t data_bytes = v.voxel_count() * bytes_each;
  const int64_t wanted = h.vox_offset + data_bytes - static_cast<int64_t>(bytes.size());
  if (wanted > 0) {
    const int64_t got = file.read(bytes, wanted);
    CR_CHECK(got == wanted, path << ": truncated: its header describes " << v.nx << " x " << v.ny << " x " << v.nz
                                 << " voxels of " << bytes_each << " bytes, " << h.vox_offset + data_bytes
                                 << " bytes with the header, and the file holds " << bytes.size());
  }

  double slope = h.scl_slope, inter = h.scl_inter;
  // scl_slope 0 means "no scaling" (nifti1.h).
  if (slope == 0 || !std::isfinite(slope) || !std::isfinite(inter)) slope = 1, inter = 0;
  v.voxels.resize(static_cast<size_t>(v.voxel_count()));
  const char* data = bytes.data() + h.vox_offset;
  int64_t not_finite = 0;
  for (int64_t k = 0; k < v.voxel_count(); ++k) {
    // Counted as stored: a float64 value beyond float's range is infinite too.
    const auto x = static_cast<float>(voxel_value(data + k * bytes_each, h.datatype, h.swapped) * slope + inter);
    not_finite += !std::isfinite(x);
    v.voxels[static_cast<size_t>(k)] = x;
  }
  // Refused, not replaced: any stand-in value (0 HU is soft tissue, -1000 air)
  // would change the lungs and the figures without a word.
  CR_CHECK(not_finite == 0, path << ": " << not_finite << " of " << v.voxel_count()
                                 << " voxels are NaN or infinite; a CT image or a mask holds finite values");

  // Geometry: the sform when set, else the qform, else the voxel sizes alone
  // (NIfTI "method 1": the axes of RAS).
  std::array<double, 3> voxel_size{1, 1, 1};
  for (int k = 0; k < 3; ++k)
    if (std::isfinite(h.pixdim[k + 1]) && h.pixdim[k + 1] > 0) voxel_size[k] = h.pixdim[k + 1];
  std::string geometry;
  if (h.sform_code > 0) {
    nifti::set_geometry_from_affine(v, h.srow);
    geometry = "sform";
  } else if (h.qform_code > 0) {
    nifti::set_geometry_from_affine(v, nifti::affine_from_qform(h.quatern_b, h.quatern_c, h.quatern_d, voxel_size,
                                                                h.pixdim[0], h.qoffset));
    geometry = "qform";
  } else {
    nifti::Affine m{};
    for (int k = 0; k < 3; ++k) m[k][k] = voxel_size[k];
    nifti::set_geometry_from_affine(v, m);
    geometry = "no qform/sform: voxel sizes only";
  }
  // A header that does not place the image in a patient: no qform nor sform,
  // or an axis-aligned matrix with its origin at exactly (0, 0, 0), what
  // converters write when they know nothing (the Zenodo slices hold one, and
  // are mirrored against their anatomy). Left and right then follow the voxel
  // order, not the patient: said, since the figures name the lungs by side.
  {
    const nifti::Affine a = nifti::affine_of(v);
    bool axis_aligned = true;
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 3; ++c) axis_aligned = axis_aligned && (r == c || a[r][c] == 0);
    const bool at_zero = a[0][3] == 0 && a[1][3] == 0 && a[2][3] == 0;
    if (geometry.starts_with("no qform") || (axis_aligned && at_zero))
      v.warnings.push_back(path + ": the NIfTI header does not place the image in the patient (" +
                           (geometry.starts_with("no qform") ? std::string("no qform or sform")
                                                             : "an axis-aligned " + geometry + " with its origin at 0") +
                           "), so left and right follow the voxel order and may be swapped");
  }
  {
    auto source = std::make_shared<NiftiSource>();
    source->qform_code = h.qform_code, source->sform_code = h.sform_code;
    source->quatern = {h.quatern_b, h.quatern_c, h.quatern_d};
    source->qoffset = h.qoffset;
    source->pixdim = {h.pixdim[0], h.pixdim[1], h.pixdim[2], h.pixdim[3]};
    source->srow = h.srow;
    source->xyzt_units = h.xyzt_units;
    source->grid = v;  // before nifti_source is set: the copy's own stays null
    v.nifti_source = std::move(source);
  }
  v.intensity = guess_intensity(v.voxels, h.datatype);

  std::ostringstream d;
  d << "NIfTI-" << h.version << (h.swapped ? " big-endian" : "") << ", datatype " << h.datatype << ", geometry from "
    << geometry;
  if (slope != 1 || inter != 0) d << ", scaled by " << slope << " + " << inter;
  if (volumes > 1) d << "; " << volumes << " volumes in the file, only the first is read";
  v.volumes_in_file = volumes;
  v.description = d.str();
  return v;
}

namespace {

// A 348-byte NIfTI-1 header in native (little-endian on every platform we
// build for) byte order, filled at fixed offsets.
class HeaderWriter {
 public:
  HeaderWriter() : bytes_(kNifti1HeaderSize + 4, 0) {}  // + 4: the empty extension flag
  template <typename T>
  void put(size_t offset, T value) { std::memcpy(bytes_.data() + offset, &value, sizeof(T)); }
  const std::vector<char>& bytes() const { return bytes_; }
  void put_text(size_t offset, const char* text, size_t max) {
    std::memcpy(bytes_.data() + offset, text, std::min(std::strlen(text), max));
  }

 private:
  std::vector<char> bytes_;
};

// std::nearbyint for |x| < 2^22 in the default rounding mode (to nearest, ties
// to even): adding 1.5 * 2^23 pushes the fraction out of the float's mantissa,
// subtracting it gives the rounded value back. Two additions instead of a libm
// call per voxel (with gzip level 1 for level 6, bench_pipeline's write_mask of a
// 255-slice mask went from 596-697 ms to 266-286 ms).
inline float round_to_nearest_even(float x) {
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23
  return (x + kShift) - kShift;
}

// Voxels into integers of type T: non-finite values become 0, the rest are
// clamped to [lo, hi] (T's range) and rounded as std::nearbyint would.
template <typename T>
void encode_integers(const float* voxels, int64_t n, float lo, float hi, char* out) {
  for (int64_t k = 0; k < n; ++k) {
    const float x = std::isfinite(voxels[k]) ? voxels[k] : 0.0f;
    const T value = static_cast<T>(round_to_nearest_even(std::clamp(x, lo, hi)));
    std::memcpy(out + k * static_cast<int64_t>(sizeof(T)), &value, sizeof(T));
  }
}

// `n` voxels in the file's type, into `out` (n * bytes per voxel).
void encode_voxels(const float* voxels, int64_t n, NiftiType type, char* out) {
  if (type == NiftiType::UInt8) {
    encode_integers<uint8_t>(voxels, n, 0.0f, 255.0f, out);
  } else if (type == NiftiType::Int16) {
    encode_integers<int16_t>(voxels, n, -32768.0f, 32767.0f, out);
  } else {
    for (int64_t k = 0; k < n; ++k) {
      const float x = std::isfinite(voxels[k]) ? voxels[k] : 0.0f;
      std::memcpy(out + 4 * k, &x, 4);
    }
  }
}

// Labels (0..255) are exact in every type.
void encode_voxels(const uint8_t* voxels, int64_t n, NiftiType type, char* out) {
  if (type == NiftiType::UInt8) {
    std::memcpy(out, voxels, static_cast<size_t>(n));
  } else if (type == NiftiType::Int16) {
    for (int64_t k = 0; k < n; ++k) {
      const auto value = static_cast<int16_t>(voxels[k]);
      std::memcpy(out + 2 * k, &value, 2);
    }
  } else {
    for (int64_t k = 0; k < n; ++k) {
      const auto value = static_cast<float>(voxels[k]);
      std::memcpy(out + 4 * k, &value, 4);
    }
  }
}

int datatype_of(NiftiType type) {
  return type == NiftiType::UInt8 ? kUInt8 : type == NiftiType::Int16 ? kInt16 : kFloat32;
}

// The 348-byte header and the 4-byte extension flag before the voxels.
template <class T> std::vector<char> header_bytes(const BasicVolume<T>& v, NiftiType type) {
  const int datatype = datatype_of(type);
  const int bytes_each = bytes_per_voxel(datatype);
  HeaderWriter h;
  h.put<int32_t>(0, kNifti1HeaderSize);
  h.put<char>(39, 0);  // dim_info: unknown
  const int16_t dims[8] = {3, static_cast<int16_t>(v.nx), static_cast<int16_t>(v.ny), static_cast<int16_t>(v.nz), 1, 1, 1, 1};
  for (int k = 0; k < 8; ++k) h.put<int16_t>(40 + 2 * k, dims[k]);
  h.put<int16_t>(70, static_cast<int16_t>(datatype));
  h.put<int16_t>(72, static_cast<int16_t>(bytes_each * 8));
  h.put<float>(108, static_cast<float>(kNifti1HeaderSize + 4));  // vox_offset
  h.put<float>(112, 1.0f);                                        // scl_slope
  h.put<float>(116, 0.0f);                                        // scl_inter
  h.put_text(148, "covidrate", 80);
  h.put_text(344, "n+1", 4);
  // On the grid of a NIfTI input (a mask of it): its own geometry fields, as
  // they were (NiftiSource).
  if (const NiftiSource* in = v.nifti_source.get(); in && grids_equal(v, in->grid)) {
    h.put<float>(76, static_cast<float>(in->pixdim[0]));
    for (int k = 1; k < 4; ++k) h.put<float>(76 + 4 * k, static_cast<float>(in->pixdim[k]));
    for (int k = 4; k < 8; ++k) h.put<float>(76 + 4 * k, 1.0f);
    h.put<char>(123, static_cast<char>(in->xyzt_units));
    h.put<int16_t>(252, static_cast<int16_t>(in->qform_code));
    h.put<int16_t>(254, static_cast<int16_t>(in->sform_code));
    for (int k = 0; k < 3; ++k) h.put<float>(256 + 4 * k, static_cast<float>(in->quatern[k]));
    for (int k = 0; k < 3; ++k) h.put<float>(268 + 4 * k, static_cast<float>(in->qoffset[k]));
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 4; ++c) h.put<float>(280 + 16 * r + 4 * c, static_cast<float>(in->srow[r][c]));
    return h.bytes();
  }
  const auto q = nifti::qform_of(v);
  const float pixdim[8] = {static_cast<float>(q ? q->qfac : 1.0), static_cast<float>(v.spacing[0]),
                           static_cast<float>(v.spacing[1]), static_cast<float>(v.spacing[2]), 1, 1, 1, 1};
  for (int k = 0; k < 8; ++k) h.put<float>(76 + 4 * k, pixdim[k]);
  h.put<char>(123, 2 | 8);  // xyzt_units: mm, s
  // Code 1: scanner-based anatomical coordinates, as the input's were.
  h.put<int16_t>(252, static_cast<int16_t>(q ? 1 : 0));
  h.put<int16_t>(254, 1);
  if (q) {
    h.put<float>(256, static_cast<float>(q->b)), h.put<float>(260, static_cast<float>(q->c));
    h.put<float>(264, static_cast<float>(q->d));
    for (int k = 0; k < 3; ++k) h.put<float>(268 + 4 * k, static_cast<float>(q->offset[k]));
  }
  const nifti::Affine a = nifti::affine_of(v);
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c) h.put<float>(280 + 16 * r + 4 * c, static_cast<float>(a[r][c]));
  return h.bytes();
}

template <class T> void write_volume(const std::string& path, const BasicVolume<T>& v, NiftiType type) {
  static_assert(std::endian::native == std::endian::little, "the NIfTI writer writes native byte order");
  CR_CHECK(v.nx >= 1 && v.ny >= 1 && v.nz >= 1 && v.nx <= 32767 && v.ny <= 32767 && v.nz <= 32767,
           path << ": cannot write a " << v.nx << " x " << v.ny << " x " << v.nz
                << " volume as NIfTI-1 (each size 1..32767)");
  CR_CHECK(static_cast<int64_t>(v.voxels.size()) == v.voxel_count(),
           path << ": volume has " << v.voxels.size() << " voxels for " << v.nx << " x " << v.ny << " x " << v.nz);

  // Written beside the target and renamed (nn/text_file.h): a reader never sees
  // half a file, and a failed write leaves any previous file intact and says why
  // ("No space left on device"): every write and the close are checked.
  const bool gzip = ends_with_ci(path, ".gz");
  AtomicFile out(path);
  std::FILE* file = out.stream();
  // Level 1: four times faster than zlib's default on a 255-slice mask (0.12 s
  // against 0.49 s for 67 MB), for a file of 1.2 MB instead of 0.9 MB. Blocks
  // compressed on all threads (data/parallel_deflate.h).
  std::optional<GzipWriter> gz;
  if (gzip) gz.emplace(file, 1);
  const auto put = [&](const char* bytes, size_t n) {
    return gz ? gz->write(bytes, n) : std::fwrite(bytes, 1, n, file) == n;
  };
  const std::vector<char> header = header_bytes(v, type);
  bool ok = put(header.data(), header.size());
  // The voxels a million at a time: the encoded copy of a whole float volume
  // would double its memory while it is written (267 MB for a 255-slice map).
  constexpr int64_t kChunk = int64_t{1} << 20;
  const int64_t bytes_each = bytes_per_voxel(datatype_of(type));
  std::vector<char> chunk(static_cast<size_t>(std::min(kChunk, v.voxel_count()) * bytes_each));
  for (int64_t at = 0; ok && at < v.voxel_count(); at += kChunk) {
    const int64_t n = std::min(kChunk, v.voxel_count() - at);
    cpu::parallel_for(n, int64_t{1} << 16, [&](int64_t begin, int64_t end) {
      encode_voxels(v.voxels.data() + at + begin, end - begin, type, chunk.data() + begin * bytes_each);
    });
    ok = put(chunk.data(), static_cast<size_t>(n * bytes_each));
  }
  if (gz) ok = gz->finish() && ok;
  // A failed write is reported by commit() with its reason; anything else that
  // failed is the compressor (out's destructor removes the temporary).
  CR_CHECK(ok || std::ferror(file), "cannot write " << path << ": the data could not be compressed");
  out.commit();
}

}  // namespace

void write_nifti(const std::string& path, const Volume& v, NiftiType type) { write_volume(path, v, type); }
void write_nifti(const std::string& path, const LabelVolume& v, NiftiType type) { write_volume(path, v, type); }

}  // namespace covidrate::data
