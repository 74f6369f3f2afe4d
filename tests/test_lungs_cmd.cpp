// `covidrate lungs` end to end: on a real CT slice with expert lung masks
// (Zenodo 3757476) the labels come back on the input's grid and geometry with
// both lungs present, the overlay is written and --json reports the Dice; on a
// corrupt file the command fails without leaving a folder behind.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "data/image2d.h"
#include "data/nifti.h"
#include "data/reorient.h"
#include "nn/json.h"
#include "support/test_support.h"
#include "support/run_covidrate.h"
#include "support/volume_checks.h"
#include "temp_files.h"

using namespace covidrate;
namespace fs = std::filesystem;

namespace {

test::ProgramRun run_lungs(const test::TempDir& dir, const std::string& args) {
  return test::run_covidrate(dir, "lungs " + args);
}

std::string zenodo(const std::string& name) {
  return (fs::path(test::data_dir()) / "lung-masks-zenodo" / name).string();
}

}  // namespace

TEST_CASE("covidrate lungs on a Zenodo CT slice: labels on the input's geometry, overlay, Dice") {
  test::TempDir dir;
  const std::string ct_path = zenodo("coronacases_001_slice_110_ct.nii.gz");
  const std::string out = dir.file("out");
  const test::ProgramRun r = run_lungs(dir, ct_path + " --out " + out + " --json --reference " +
                                   zenodo("coronacases_001_slice_110_lungs.nii.gz"));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK_FALSE(fs::exists(out + ".tmp"));

  const data::Volume ct = data::read_nifti(ct_path);
  const data::Volume labels = data::read_nifti(out + "/lungs.nii.gz");
  test::check_same_geometry(labels, ct);
  int64_t right = 0, left = 0, other = 0;
  for (const float v : labels.voxels) {
    right += v == 1.f;
    left += v == 2.f;
    other += v != 0.f && v != 1.f && v != 2.f;
  }
  CHECK(right > 1000);
  CHECK(left > 1000);
  CHECK(other == 0);

  const data::Volume overlay = data::read_image(out + "/lungs_overlay.png");
  CHECK(overlay.nx >= ct.nx);
  CHECK(overlay.ny >= ct.ny);

  // The numbers: one slice, so areas in mm^2; Dice as test_lungs measures it.
  const json::Value report = json::parse(r.out);
  REQUIRE(report.find("unit"));
  CHECK(report.find("unit")->text == "mm2");
  const double voxel_mm2 = ct.spacing[0] * ct.spacing[1];
  CHECK(std::stod(report.find("right")->text) == doctest::Approx(right * voxel_mm2).epsilon(1e-4));
  CHECK(std::stod(report.find("slices_with_lung")->text) == 1);
  CHECK(std::stod(report.find("dice_right")->text) >= 0.95);
  CHECK(std::stod(report.find("dice_left")->text) >= 0.95);

  // The folder is new every time: a second run into it is refused.
  const test::ProgramRun again = run_lungs(dir, ct_path + " --out " + out);
  CHECK(again.exit_code == 1);
  CHECK(again.err.find("already exists") != std::string::npos);
}

TEST_CASE("covidrate lungs on a sagittal stack: the axial answer, written on the stack's own grid") {
  // A Zenodo slice stored as 512 sagittal slices of 1 x 512 (x <-> z): the
  // same voxels at the same places. Read as axial again, the labels are the
  // axial slice's exactly; it used to be refused ("its slices are sagittal").
  test::TempDir dir;
  const std::string axial_path = zenodo("coronacases_001_slice_98_ct.nii.gz");
  const data::AxisOrder swap_x_z{2, 1, 0};
  const data::Volume sagittal = data::permute_axes(data::read_nifti(axial_path), swap_x_z);
  data::write_nifti(dir.file("sagittal.nii.gz"), sagittal, data::NiftiType::Float32);
  const test::ProgramRun a = run_lungs(dir, axial_path + " --out " + dir.file("a"));
  REQUIRE_MESSAGE(a.exit_code == 0, a.err);
  const test::ProgramRun s = run_lungs(dir, dir.file("sagittal.nii.gz") + " --out " + dir.file("s"));
  REQUIRE_MESSAGE(s.exit_code == 0, s.err);
  const data::Volume labels = data::read_nifti(dir.file("s/lungs.nii.gz"));
  CHECK(labels.nx == sagittal.nx);
  CHECK(labels.nz == sagittal.nz);
  const data::Volume expected = data::read_nifti(dir.file("a/lungs.nii.gz"));
  CHECK(std::count(expected.voxels.begin(), expected.voxels.end(), 1.f) > 1000);
  CHECK(data::permute_axes(labels, swap_x_z).voxels == expected.voxels);
}

TEST_CASE("covidrate lungs: a corrupt file fails with a message and leaves no folder; usage errors exit 2") {
  test::TempDir dir;
  const std::vector<char> bytes = test::read_bytes(zenodo("radiopaedia_14_85914_0_slice_0_ct.nii.gz"));
  const std::string corrupt = dir.file("corrupt.nii.gz");
  {
    std::ofstream f(corrupt, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 3));  // a truncated download
  }
  const std::string out = dir.file("out");
  const test::ProgramRun r = run_lungs(dir, corrupt + " --out " + out);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("corrupt.nii.gz") != std::string::npos);
  CHECK_FALSE(fs::exists(out));
  CHECK_FALSE(fs::exists(out + ".tmp"));

  CHECK(run_lungs(dir, corrupt).exit_code == 2);                      // no --out
  CHECK(run_lungs(dir, "--out " + out).exit_code == 2);              // no input
  CHECK(run_lungs(dir, corrupt + " --out " + out + " --bogus").exit_code == 2);
  CHECK_FALSE(fs::exists(out));

  // The CT itself given as the reference (it used to score Dice 0.000, exit 0).
  const std::string ct = zenodo("coronacases_001_slice_98_ct.nii.gz");
  const test::ProgramRun swapped = run_lungs(dir, ct + " --out " + out + " --reference " + ct);
  CHECK(swapped.exit_code == 1);
  CHECK(swapped.err.find("are not lung labels") != std::string::npos);
  CHECK_FALSE(fs::exists(out));
  // ... or as the lesions (its contours were drawn as lesion, exit 0).
  const test::ProgramRun as_lesions = run_lungs(dir, ct + " --out " + out + " --lesions " + ct);
  CHECK(as_lesions.exit_code == 1);
  CHECK(as_lesions.err.find("are not a lesion mask") != std::string::npos);
  CHECK_FALSE(fs::exists(out));
}
