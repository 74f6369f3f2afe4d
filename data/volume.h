// A scalar image volume in patient space: what every reader returns and every
// writer takes. Voxels are float32, stored x fastest, then y, then z
// (slice-major: voxel(x, y, z) = data[(z * ny + y) * nx + x]), so one axial slice
// is a contiguous ny x nx image that maps directly onto a [1, 1, ny, nx] tensor.
// Label volumes that a pipeline makes itself (lungs, lesions) hold one byte a
// voxel instead (LabelVolume): for a 512 x 512 x 255 study that is 67 MB a
// mask rather than 267.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace covidrate::data {

// What the voxel values mean.
enum class Intensity {
  HounsfieldUnits,  // CT in HU (DICOM with rescale, NIfTI CT)
  Picture8Bit,      // windowed 8-bit pictures (PNG/JPG slices), 0..255
  Label,            // masks: 0 background, 1.. labels
  ScannerUnits      // raw scanner intensities with no fixed scale (MR, NM, US in DICOM)
};

struct NiftiSource;  // below

// The grid of a volume in patient space, whatever its voxels hold: what the
// NIfTI header and the lungs' sides are computed from.
struct VolumeGrid {
  int64_t nx = 0, ny = 0, nz = 0;
  // Geometry, in the LPS patient frame of DICOM (millimetres):
  // position of voxel (i, j, k) = origin + i*spacing[0]*row_dir + j*spacing[1]*col_dir + k*spacing[2]*slice_dir
  std::array<double, 3> spacing{1, 1, 1};
  std::array<double, 3> origin{0, 0, 0};
  std::array<double, 3> row_dir{1, 0, 0};    // direction of increasing x (i)
  std::array<double, 3> col_dir{0, 1, 0};    // direction of increasing y (j)
  std::array<double, 3> slice_dir{0, 0, 1};  // direction of increasing z (k)
  // Read from a NIfTI file: its header's geometry fields as they were, and the
  // grid they were read as. Copied with the grid; write_nifti writes the fields
  // back unchanged on a volume of that same grid (a mask of the input), since
  // viewers differ in whether they take the qform or the sform, and a mask must
  // overlay its image in every one of them. Null for other sources.
  std::shared_ptr<const NiftiSource> nifti_source;

  int64_t voxel_count() const { return nx * ny * nz; }
};

// Directions in patient space (row_dir, col_dir, slice_dir).
inline std::array<double, 3> cross(const std::array<double, 3>& a, const std::array<double, 3>& b) {
  return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}
inline double dot(const std::array<double, 3>& a, const std::array<double, 3>& b) {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

// The volume of one voxel in mm^3: the in-plane spacings times the distance
// between the slices' planes, which for a gantry-tilted series (its slices
// shifted within their plane from one to the next: a sheared grid) is the step
// between slices times the cosine of the tilt, not the step itself.
inline double voxel_volume_mm3(const VolumeGrid& g) {
  const double along = std::abs(dot(cross(g.row_dir, g.col_dir), g.slice_dir));
  return g.spacing[0] * g.spacing[1] * g.spacing[2] * along;
}

// Whether two grids are the same voxels at the same places (exactly: a grid
// copied or permuted back and forth compares equal, a computed one need not).
inline bool grids_equal(const VolumeGrid& a, const VolumeGrid& b) {
  return a.nx == b.nx && a.ny == b.ny && a.nz == b.nz && a.spacing == b.spacing && a.origin == b.origin &&
         a.row_dir == b.row_dir && a.col_dir == b.col_dir && a.slice_dir == b.slice_dir;
}

// The geometry fields of a NIfTI header as a file held them (data/nifti.cpp).
struct NiftiSource {
  int qform_code = 0, sform_code = 0;
  std::array<double, 3> quatern{};  // b, c, d
  std::array<double, 3> qoffset{};
  std::array<double, 4> pixdim{};   // qfac, then the voxel sizes
  std::array<std::array<double, 4>, 3> srow{};
  int xyzt_units = 0;
  VolumeGrid grid;  // as read (its own nifti_source null)
};

template <class T> struct BasicVolume : VolumeGrid {
  using Voxel = T;
  std::vector<T> voxels;  // nx * ny * nz values
  Intensity intensity = Intensity::HounsfieldUnits;
  std::string source;       // the file or folder it came from
  std::string description;  // e.g. the DICOM series chosen and why
  // A 4-D file (NIfTI with nt > 1) held this many 3-D volumes; `voxels` holds
  // the first. Pipelines refuse it (to_input_domain), viewers say it.
  int64_t volumes_in_file = 1;
  // What the reader noticed that limits how far results on this volume can be
  // trusted (slices missing from a DICOM series, ...): one sentence each. Also
  // in `description`; kept apart so that segment can show them on the terminal
  // and in its report.
  std::vector<std::string> warnings;

  T* slice(int64_t z) { return voxels.data() + z * nx * ny; }
  const T* slice(int64_t z) const { return voxels.data() + z * nx * ny; }
  T& at(int64_t x, int64_t y, int64_t z) { return voxels[(z * ny + y) * nx + x]; }
  T at(int64_t x, int64_t y, int64_t z) const { return voxels[(z * ny + y) * nx + x]; }
};
using Volume = BasicVolume<float>;
// Intensity::Label, values 0..255 (data/lungs.h's LungLabel, or 0/1 lesions).
using LabelVolume = BasicVolume<uint8_t>;

// A volume of T on v's grid and geometry (sizes, spacing, origin, directions,
// source, description) with every voxel `fill`, made without copying v's voxels
// first: for a 512 x 512 x 255 study that copy is 267 MB. With `slices` (at
// most v.nz), the grid of v's first `slices` slices only.
template <class T = float, class U>
BasicVolume<T> same_grid(const BasicVolume<U>& v, Intensity intensity, std::type_identity_t<T> fill = T{0},
                         int64_t slices = -1) {
  BasicVolume<T> out;
  static_cast<VolumeGrid&>(out) = v;
  out.nz = slices < 0 ? v.nz : std::min(slices, v.nz);
  out.intensity = intensity;
  out.source = v.source;
  out.description = v.description;
  out.voxels.assign(static_cast<size_t>(out.voxel_count()), fill);
  return out;
}

// A label volume as floats (same grid and values), for code that reads masks
// of either origin alike: files hold float volumes, pipelines make bytes.
inline Volume to_float(const LabelVolume& labels) {
  Volume out = same_grid(labels, labels.intensity, 0.f, labels.nz);
  std::copy(labels.voxels.begin(), labels.voxels.end(), out.voxels.begin());
  return out;
}

}  // namespace covidrate::data
