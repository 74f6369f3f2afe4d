// Checks shared by the tests of anything that writes a volume meant to overlay
// another (NIfTI round trips, segment's and lungs' outputs): same grid and the
// same patient-frame geometry, so a viewer lays one exactly over the other.
#pragma once
#include <doctest/doctest.h>

#include "data/volume.h"

namespace covidrate::test {

inline void check_same_geometry(const data::VolumeGrid& a, const data::VolumeGrid& b) {
  CHECK(a.nx == b.nx);
  CHECK(a.ny == b.ny);
  CHECK(a.nz == b.nz);
  for (int k = 0; k < 3; ++k) {
    CHECK(a.spacing[k] == doctest::Approx(b.spacing[k]).epsilon(1e-5));
    CHECK(a.origin[k] == doctest::Approx(b.origin[k]).epsilon(1e-5));
    CHECK(a.row_dir[k] == doctest::Approx(b.row_dir[k]).epsilon(1e-5));
    CHECK(a.col_dir[k] == doctest::Approx(b.col_dir[k]).epsilon(1e-5));
    CHECK(a.slice_dir[k] == doctest::Approx(b.slice_dir[k]).epsilon(1e-5));
  }
}

}  // namespace covidrate::test
