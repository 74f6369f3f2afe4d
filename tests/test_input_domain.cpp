// The one input domain: the window mapping, the per-image standardization,
// orientation, and on real data the claim that matters: a MedSeg picture and a
// DICOM slice mapped through the window show lung and soft tissue at the same
// grey levels.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "data/dicom.h"
#include "data/image2d.h"
#include "data/input_domain.h"
#include "data/lungs.h"
#include "nn/error.h"
#include "tests/support/test_support.h"

using namespace covidrate;
using namespace covidrate::data;

TEST_CASE("hu_to_domain maps the window onto 0..255 and clamps outside it") {
  CHECK(hu_to_domain(kMedSegWindow.low_hu) == doctest::Approx(0));
  CHECK(hu_to_domain(kMedSegWindow.high_hu) == doctest::Approx(255));
  CHECK(hu_to_domain(-500) == doctest::Approx(255.0 * 750 / 1550));
  CHECK(hu_to_domain(-3024) == 0);
  CHECK(hu_to_domain(3000) == 255);
  for (float hu : {-1200.f, -850.f, -100.f, 40.f, 200.f}) CHECK(domain_to_hu(hu_to_domain(hu)) == doctest::Approx(hu).epsilon(1e-4));
}

TEST_CASE("to_input_domain maps HU, keeps pictures, refuses labels") {
  Volume hu;
  hu.nx = 3, hu.ny = 1, hu.nz = 1;
  hu.voxels = {-1250, -500, 300};
  const Volume d = to_input_domain(hu);
  CHECK(d.intensity == Intensity::Picture8Bit);
  CHECK(d.voxels[1] == doctest::Approx(255.0 * 750 / 1550));
  Volume pic = hu;
  pic.intensity = Intensity::Picture8Bit;
  pic.voxels = {-3, 100, 300};
  CHECK(to_input_domain(pic).voxels == std::vector<float>{0, 100, 255});
  Volume mask = hu;
  mask.intensity = Intensity::Label;
  CHECK_THROWS_AS(to_input_domain(mask), Error);
  // The first volume of a 4-D file, and NaN or infinite voxels: refused, naming the source.
  hu.source = "scan.nii";
  Volume four_d = hu;
  four_d.volumes_in_file = 3;
  CHECK_THROWS_WITH_AS(to_input_domain(four_d), doctest::Contains("scan.nii holds 3 volumes (4-D)"), Error);
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
    Volume v = hu;
    v.voxels[2] = bad;
    CHECK_THROWS_WITH_AS(to_input_domain(v), doctest::Contains("scan.nii: 1 of 3 voxels are NaN or infinite"), Error);
  }
}

TEST_CASE("domain_stats summarizes the masked values") {
  const std::vector<float> v = {1, 2, 3, 4, 100};
  const std::vector<uint8_t> mask = {1, 1, 1, 1, 0};
  const DomainStats s = domain_stats(v.data(), mask.data(), 5);
  CHECK(s.count == 4);
  CHECK(s.mean == doctest::Approx(2.5));
  CHECK(s.std == doctest::Approx(std::sqrt(1.25)));
  CHECK(s.p50 == 3);  // the element at rank round(0.5 * 3) = 2 of 1, 2, 3, 4
  CHECK(domain_stats(v.data(), nullptr, 5).p95 == 100);
}

TEST_CASE("standardize gives mean 0 and std 1, and leaves a blank slice finite") {
  std::vector<float> v = {10, 20, 30, 40};
  standardize(v.data(), 4);
  double mean = 0, sq = 0;
  for (float x : v) mean += x / 4.0, sq += double(x) * x / 4.0;
  CHECK(mean == doctest::Approx(0).epsilon(1e-6));
  CHECK(sq == doctest::Approx(1).epsilon(1e-5));
  std::vector<float> blank(9, 7.f);
  standardize(blank.data(), 9);
  for (float x : blank) CHECK(x == 0.f);
}

TEST_CASE("radiological_slice undoes flips and the MedSeg transpose") {
  // 3 wide, 2 tall: values name their (x, y).
  Volume v;
  v.nx = 3, v.ny = 2, v.nz = 1;
  v.voxels = {0, 1, 2, 10, 11, 12};
  v.row_dir = {-1, 0, 0};  // x runs towards the patient's right: flip it
  CHECK(radiological_slice(v, 0).voxels == std::vector<float>{2, 1, 0, 12, 11, 10});
  set_medseg_picture_orientation(v);  // x = anterior -> posterior, y = right -> left: transpose
  const Volume r = radiological_slice(v, 0);
  CHECK(r.nx == 2);
  CHECK(r.ny == 3);
  CHECK(r.voxels == std::vector<float>{0, 10, 1, 11, 2, 12});
  CHECK(medseg_layout(r).voxels == v.voxels);
  CHECK_THROWS_AS(radiological_slice(v, 1), Error);

  // A picture as read (default directions) is taken to be in the MedSeg layout,
  // and so is a byte mask of one.
  LabelVolume read;
  read.nx = 3, read.ny = 2, read.nz = 1;
  read.voxels = {0, 1, 2, 10, 11, 12};
  const LabelVolume shown = medseg_picture_displayed(read);
  CHECK(shown.nx == 2);
  CHECK(shown.ny == 3);
  CHECK(shown.voxels == std::vector<uint8_t>{0, 10, 1, 11, 2, 12});
}

namespace {

// Grey levels of the lungs (without lesions) and of the soft tissue around
// them, gathered over many slices of one source.
struct Levels {
  std::vector<float> lung, tissue;
};

void gather(const Volume& domain, const LabelVolume& lungs, const Volume* lesion, int64_t z, Levels& out) {
  const int64_t plane = domain.nx * domain.ny;
  const float* d = domain.slice(z);
  const uint8_t* l = lungs.slice(z);
  const float tissue_floor = hu_to_domain(-500);
  for (int64_t p = 0; p < plane; ++p) {
    if (lesion && lesion->voxels[p] != 0) continue;
    if (l[p] != 0) out.lung.push_back(d[p]);
    else if (d[p] > tissue_floor) out.tissue.push_back(d[p]);
  }
}

float median(const std::vector<float>& v) { return float(domain_stats(v.data(), nullptr, int64_t(v.size())).p50); }

// The most frequent grey level of soft tissue (fat, muscle, organs), 4-level bins in 150..250.
float tissue_mode(const std::vector<float>& v) {
  std::vector<int64_t> bins(25, 0);
  for (float x : v)
    if (x >= 150 && x < 250) ++bins[size_t((x - 150) / 4)];
  return 150 + 4 * float(std::max_element(bins.begin(), bins.end()) - bins.begin()) + 2;
}

}  // namespace

TEST_CASE("MedSeg pictures and mapped DICOM slices agree on lung and soft-tissue grey levels") {
  namespace fs = std::filesystem;
  const fs::path train = fs::path(test::data_dir()) / "medseg-semiseg" / "train";
  const fs::path healthy = fs::path(test::data_dir()) / "ct-healthy-tcga";
  REQUIRE(fs::is_directory(train));
  REQUIRE(fs::is_directory(healthy));
  const ClassicalLungExtractor extractor;

  Levels medseg;
  for (const auto& e : fs::directory_iterator(train / "images")) {
    Volume picture = read_image(e.path().string());
    const Volume lesion = read_image((train / "masks" / (e.path().stem().string() + ".png")).string());
    set_medseg_picture_orientation(picture);
    gather(picture, extractor.extract(picture).labels, &lesion, 0, medseg);
  }
  const Volume ct = read_dicom_series(healthy.string());
  const Volume domain = to_input_domain(ct);
  const LungSegmentation seg = extractor.extract(ct);
  Levels dicom;
  for (int64_t z = 0; z < ct.nz; ++z)
    if (seg.slice_has_lung[z]) gather(domain, seg.labels, nullptr, z, dicom);

  const float lung_m = median(medseg.lung), lung_d = median(dicom.lung);
  const float tissue_m = tissue_mode(medseg.tissue), tissue_d = tissue_mode(dicom.tissue);
  MESSAGE("healthy lung median: MedSeg " << lung_m << ", DICOM mapped " << lung_d << "; soft-tissue mode: MedSeg "
                                         << tissue_m << ", DICOM mapped " << tissue_d);
  // Soft tissue has one density in every patient: within 6 grey levels (36 HU).
  // Aerated lung density varies between patients, scanners and breath-holds
  // by about 100 HU: within 12 grey levels (73 HU).
  CHECK(std::abs(tissue_m - tissue_d) <= 6);
  CHECK(std::abs(lung_m - lung_d) <= 12);
}
