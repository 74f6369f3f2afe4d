// A scalar image volume in patient space: what every reader returns and every
// writer takes. Voxels are float32, stored x fastest, then y, then z
// (slice-major: voxel(x, y, z) = data[(z * ny + y) * nx + x]), so one axial slice
// is a contiguous ny x nx image that maps directly onto a [1, 1, ny, nx] tensor.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace covidrate::data {

// What the voxel values mean.
enum class Intensity {
  HounsfieldUnits,  // CT in HU (DICOM with rescale, NIfTI CT)
  Picture8Bit,      // windowed 8-bit pictures (PNG/JPG slices), 0..255
  Label,            // masks: 0 background, 1.. labels
  ScannerUnits      // raw scanner intensities with no fixed scale (MR, NM, US in DICOM)
};

struct Volume {
  int64_t nx = 0, ny = 0, nz = 0;
  std::vector<float> voxels;  // nx * ny * nz values
  // Geometry, in the LPS patient frame of DICOM (millimetres):
  // position of voxel (i, j, k) = origin + i*spacing[0]*row_dir + j*spacing[1]*col_dir + k*spacing[2]*slice_dir
  std::array<double, 3> spacing{1, 1, 1};
  std::array<double, 3> origin{0, 0, 0};
  std::array<double, 3> row_dir{1, 0, 0};    // direction of increasing x (i)
  std::array<double, 3> col_dir{0, 1, 0};    // direction of increasing y (j)
  std::array<double, 3> slice_dir{0, 0, 1};  // direction of increasing z (k)
  Intensity intensity = Intensity::HounsfieldUnits;
  std::string source;       // the file or folder it came from
  std::string description;  // e.g. the DICOM series chosen and why

  int64_t voxel_count() const { return nx * ny * nz; }
  float* slice(int64_t z) { return voxels.data() + z * nx * ny; }
  const float* slice(int64_t z) const { return voxels.data() + z * nx * ny; }
  float& at(int64_t x, int64_t y, int64_t z) { return voxels[(z * ny + y) * nx + x]; }
  float at(int64_t x, int64_t y, int64_t z) const { return voxels[(z * ny + y) * nx + x]; }
};

// A volume on v's grid and geometry (sizes, spacing, origin, directions, source,
// description) with every voxel `fill`, made without copying v's voxels first:
// for a 512 x 512 x 255 study that copy is 267 MB. With `slices` (at most v.nz),
// the grid of v's first `slices` slices only.
inline Volume same_grid(const Volume& v, Intensity intensity, float fill = 0.f, int64_t slices = -1) {
  Volume out;
  out.nx = v.nx;
  out.ny = v.ny;
  out.nz = slices < 0 ? v.nz : std::min(slices, v.nz);
  out.spacing = v.spacing;
  out.origin = v.origin;
  out.row_dir = v.row_dir;
  out.col_dir = v.col_dir;
  out.slice_dir = v.slice_dir;
  out.intensity = intensity;
  out.source = v.source;
  out.description = v.description;
  out.voxels.assign(static_cast<size_t>(out.voxel_count()), fill);
  return out;
}

}  // namespace covidrate::data
