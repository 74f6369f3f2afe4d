// NIfTI geometry ↔ Volume geometry. NIfTI maps voxel indices to RAS+ world
// coordinates with a 3x4 affine (the sform) or a quaternion, offset and voxel
// sizes (the qform); a Volume keeps LPS+ directions, spacings and an origin.
// Internal to data/nifti.cpp.
#pragma once
#include <array>
#include <optional>

#include "data/volume.h"

namespace covidrate::data::nifti {

// Rows of a voxel-to-RAS affine: world = A * (i, j, k, 1).
using Affine = std::array<std::array<double, 4>, 3>;

// The affine of a qform: quaternion (b, c, d) with a = sqrt(1 - b² - c² - d²),
// voxel sizes pixdim[1..3], qfac = pixdim[0] (-1 flips the k axis), offset.
Affine affine_from_qform(double b, double c, double d, const std::array<double, 3>& voxel_size,
                         double qfac, const std::array<double, 3>& offset);

// Sets v's spacing, directions and origin from a voxel-to-RAS affine (RAS →
// LPS: x and y change sign). Throws if a column of the affine is zero.
void set_geometry_from_affine(Volume& v, const Affine& ras);

// The voxel-to-RAS affine of v's geometry (the sform to write).
Affine affine_of(const VolumeGrid& v);

// A qform for v's geometry, or nullopt when its directions are not orthonormal
// (a sheared, gantry-tilted grid can only be written as an sform).
struct Qform {
  double b, c, d, qfac;
  std::array<double, 3> offset;
};
std::optional<Qform> qform_of(const VolumeGrid& v);

}  // namespace covidrate::data::nifti
