// Sagittal or coronal stacks (as a reformat exports them) made axial by an
// exact permutation of the voxel axes: no resampling, every voxel keeps its
// value and its position in the patient, only the order it is stored in
// changes. Lung extraction and the network read axial slices; segment and
// lungs read such a stack through this and write their masks back on the
// input's own grid with the inverse permutation.
//
// An oblique stack (slices at, say, 45 degrees) has no exact axial form; the
// axis nearest the patient's head-foot axis becomes z, and the lung extractor
// then judges whether that is axial enough (data/lungs.h).
#pragma once
#include <array>
#include <cmath>
#include <cstdint>

#include "data/volume.h"

namespace covidrate::data {

// Axis k of the permuted volume is axis order[k] of the original (0 = x, the
// rows' direction; 1 = y; 2 = z, the slices').
using AxisOrder = std::array<int, 3>;
inline constexpr AxisOrder kSameAxes{0, 1, 2};

// The order that makes v's slices axial: the axis that runs most along the
// patient's head-foot axis (LPS z) becomes z; the other two keep their order.
// kSameAxes when v is axial already (ties keep the slices as they are).
inline AxisOrder axial_axis_order(const VolumeGrid& v) {
  const std::array<double, 3> along_z{std::abs(v.row_dir[2]), std::abs(v.col_dir[2]), std::abs(v.slice_dir[2])};
  if (along_z[2] >= along_z[0] && along_z[2] >= along_z[1]) return kSameAxes;
  return along_z[0] >= along_z[1] ? AxisOrder{1, 2, 0} : AxisOrder{0, 2, 1};
}

inline AxisOrder inverse(const AxisOrder& order) {
  AxisOrder back{};
  for (int k = 0; k < 3; ++k) back[order[k]] = k;
  return back;
}

// v with its axes permuted: sizes, spacing and direction vectors follow their
// axes, the origin (voxel 0, 0, 0 is the same voxel) and everything else is kept.
template <class T> BasicVolume<T> permute_axes(const BasicVolume<T>& v, const AxisOrder& order) {
  BasicVolume<T> out;
  static_cast<VolumeGrid&>(out) = v;
  out.intensity = v.intensity;
  out.source = v.source;
  out.description = v.description;
  out.volumes_in_file = v.volumes_in_file;
  out.warnings = v.warnings;
  const std::array<int64_t, 3> n{v.nx, v.ny, v.nz};
  const std::array<std::array<double, 3>, 3> dirs{v.row_dir, v.col_dir, v.slice_dir};
  out.nx = n[order[0]], out.ny = n[order[1]], out.nz = n[order[2]];
  out.row_dir = dirs[order[0]], out.col_dir = dirs[order[1]], out.slice_dir = dirs[order[2]];
  out.spacing = {v.spacing[order[0]], v.spacing[order[1]], v.spacing[order[2]]};
  // The input's index step of each output axis: out(i, j, k) = v(.. i, j, k placed by `order` ..).
  const std::array<int64_t, 3> stride{1, v.nx, v.nx * v.ny};
  const int64_t si = stride[order[0]], sj = stride[order[1]], sk = stride[order[2]];
  out.voxels.resize(v.voxels.size());
  int64_t at = 0;
  for (int64_t k = 0; k < out.nz; ++k)
    for (int64_t j = 0; j < out.ny; ++j)
      for (int64_t i = 0; i < out.nx; ++i) out.voxels[at++] = v.voxels[i * si + j * sj + k * sk];
  return out;
}

}  // namespace covidrate::data
