// Quaternion and affine conversions between NIfTI's RAS+ and covidrate's LPS+.
#include "data/nifti_affine.h"

#include <algorithm>
#include <cmath>

#include "nn/error.h"

namespace covidrate::data::nifti {
namespace {

using Vec3 = std::array<double, 3>;
using Mat3 = std::array<Vec3, 3>;  // Mat3[row][column]

// LPS and RAS differ by the sign of the first two world coordinates.
constexpr Vec3 kLpsFromRas{-1, -1, 1};

}  // namespace

Affine affine_from_qform(double b, double c, double d, const Vec3& voxel_size, double qfac, const Vec3& offset) {
  // (b, c, d) are stored; a is implied. Rounding can make 1 - b²-c²-d² slightly
  // negative for a 180° rotation, where a is 0.
  const double a = std::sqrt(std::max(0.0, 1.0 - (b * b + c * c + d * d)));
  const Mat3 r{{{a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)},
                {2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)},
                {2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b}}};
  const Vec3 scale{voxel_size[0], voxel_size[1], voxel_size[2] * (qfac < 0 ? -1.0 : 1.0)};
  Affine m{};
  for (int row = 0; row < 3; ++row) {
    for (int col = 0; col < 3; ++col) m[row][col] = r[row][col] * scale[col];
    m[row][3] = offset[row];
  }
  return m;
}

void set_geometry_from_affine(Volume& v, const Affine& ras) {
  std::array<Vec3, 3> dirs{};
  for (int col = 0; col < 3; ++col) {
    Vec3 column;
    for (int row = 0; row < 3; ++row) column[row] = ras[row][col] * kLpsFromRas[row];
    const double length = std::sqrt(dot(column, column));
    CR_CHECK(std::isfinite(length) && length > 0,
             v.source << ": the NIfTI affine has a zero or non-finite column " << col);
    v.spacing[col] = length;
    for (int row = 0; row < 3; ++row) dirs[col][row] = column[row] / length;
  }
  v.row_dir = dirs[0];
  v.col_dir = dirs[1];
  v.slice_dir = dirs[2];
  for (int row = 0; row < 3; ++row) {
    v.origin[row] = ras[row][3] * kLpsFromRas[row];
    CR_CHECK(std::isfinite(v.origin[row]), v.source << ": the NIfTI affine has a non-finite offset");
  }
}

Affine affine_of(const VolumeGrid& v) {
  const std::array<const Vec3*, 3> dirs{&v.row_dir, &v.col_dir, &v.slice_dir};
  Affine m{};
  for (int row = 0; row < 3; ++row) {
    for (int col = 0; col < 3; ++col) m[row][col] = (*dirs[col])[row] * v.spacing[col] * kLpsFromRas[row];
    m[row][3] = v.origin[row] * kLpsFromRas[row];
  }
  return m;
}

std::optional<Qform> qform_of(const VolumeGrid& v) {
  // Rotation part in RAS, columns = axis directions.
  Mat3 r{};
  const std::array<const Vec3*, 3> dirs{&v.row_dir, &v.col_dir, &v.slice_dir};
  for (int row = 0; row < 3; ++row)
    for (int col = 0; col < 3; ++col) r[row][col] = (*dirs[col])[row] * kLpsFromRas[row];
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      const double d = r[0][i] * r[0][j] + r[1][i] * r[1][j] + r[2][i] * r[2][j];
      if (std::fabs(d - (i == j ? 1.0 : 0.0)) > 1e-4) return std::nullopt;
    }
  }
  // A left-handed frame is a rotation with the k axis flipped: qfac = -1.
  const double det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1]) -
                     r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0]) +
                     r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
  Qform q{};
  q.qfac = det < 0 ? -1 : 1;
  if (det < 0)
    for (int row = 0; row < 3; ++row) r[row][2] = -r[row][2];
  // Rotation matrix → unit quaternion (a, b, c, d), choosing the numerically
  // largest component first so the divisions stay well-conditioned.
  double a, b, c, d;
  const double trace = r[0][0] + r[1][1] + r[2][2];
  if (trace > 0.5) {
    a = 0.5 * std::sqrt(1 + trace);
    b = (r[2][1] - r[1][2]) / (4 * a);
    c = (r[0][2] - r[2][0]) / (4 * a);
    d = (r[1][0] - r[0][1]) / (4 * a);
  } else if (r[0][0] >= r[1][1] && r[0][0] >= r[2][2]) {
    b = 0.5 * std::sqrt(1 + r[0][0] - r[1][1] - r[2][2]);
    c = (r[0][1] + r[1][0]) / (4 * b);
    d = (r[0][2] + r[2][0]) / (4 * b);
    a = (r[2][1] - r[1][2]) / (4 * b);
  } else if (r[1][1] >= r[2][2]) {
    c = 0.5 * std::sqrt(1 + r[1][1] - r[0][0] - r[2][2]);
    b = (r[0][1] + r[1][0]) / (4 * c);
    d = (r[1][2] + r[2][1]) / (4 * c);
    a = (r[0][2] - r[2][0]) / (4 * c);
  } else {
    d = 0.5 * std::sqrt(1 + r[2][2] - r[0][0] - r[1][1]);
    b = (r[0][2] + r[2][0]) / (4 * d);
    c = (r[1][2] + r[2][1]) / (4 * d);
    a = (r[1][0] - r[0][1]) / (4 * d);
  }
  // NIfTI stores only (b, c, d) and takes a >= 0; (a, b, c, d) and its negation
  // are the same rotation.
  if (a < 0) b = -b, c = -c, d = -d;
  q.b = b, q.c = c, q.d = d;
  for (int row = 0; row < 3; ++row) q.offset[row] = v.origin[row] * kLpsFromRas[row];
  return q;
}

}  // namespace covidrate::data::nifti
