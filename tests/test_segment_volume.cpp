// The segmentation pipeline below the command (data/segment_pipeline.h,
// data/segment_study.h, data/report.h) on small synthetic volumes and the
// RICORD sample: slices without lung, the batch shapes, queuing a batch ahead
// as on a GPU, the cut to the lungs' box, the layout permutation, the figures
// and the montage. The command itself, end to end on real CT, is
// tests/test_segment.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "data/dicom.h"
#include "data/image2d.h"
#include "data/input_domain.h"
#include "data/lungs.h"
#include "data/read_any.h"
#include "data/report.h"
#include "data/segment_pipeline.h"
#include "data/segment_study.h"
#include "kernels/op_profile.h"
#include "kernels/ops.h"
#include "model/covidrate_net.h"
#include "support/test_support.h"
#include "temp_files.h"

using namespace covidrate;

namespace {

// The options of the small synthetic studies below: 64 x 64 network inputs on the CPU.
data::SegmentOptions small_cpu_options(int64_t batch, double threshold) {
  data::SegmentOptions options;
  options.threshold = threshold;
  options.batch = batch;
  options.size = 64;
  options.device = Device::CPU;
  return options;
}

// An n x n x nz CT of air (-1000 HU) for the synthetic-volume tests to draw in.
data::Volume air_ct(int64_t n, int64_t nz) {
  data::Volume ct;
  ct.nx = ct.ny = n;
  ct.nz = nz;
  ct.voxels.assign(ct.voxel_count(), -1000.f);
  return ct;
}

// A 96 x 96 body of soft tissue with two round lungs per slice, five slices,
// the lungs growing and brightening from slice to slice (so that every slice
// gives the network something different).
data::Volume five_slices_of_growing_lungs() {
  data::Volume ct = air_ct(96, 5);
  for (int64_t z = 0; z < ct.nz; ++z)
    for (int64_t y = 0; y < ct.ny; ++y)
      for (int64_t x = 0; x < ct.nx; ++x) {
        if ((x - 48) * (x - 48) + (y - 48) * (y - 48) < 42 * 42) ct.at(x, y, z) = 40.f;
        const int64_t r = 10 + 2 * z;
        for (int64_t cx : {30, 66})
          if ((x - cx) * (x - cx) + (y - 44) * (y - 44) < r * r) ct.at(x, y, z) = -850.f + 60.f * float(z);
      }
  return ct;
}

}  // namespace

TEST_CASE("a slice without lung is not segmented and gets an empty mask") {
  // Two slices: air everywhere, and a disc of soft tissue (a body without lungs).
  data::Volume ct = air_ct(96, 2);
  for (int64_t y = 0; y < ct.ny; ++y)
    for (int64_t x = 0; x < ct.nx; ++x)
      if ((x - 48) * (x - 48) + (y - 48) * (y - 48) < 40 * 40) ct.at(x, y, 1) = 40.f;
  CovidRateNet net(NetConfig{.width = 0.0625, .cpb = true, .seed = 3});
  net.set_training(false);
  const data::SegmentOptions options = small_cpu_options(2, 0.0);
  const data::Segmentation seg = data::segment_volume(ct, net, options);
  CHECK(seg.slices_segmented == 0);
  CHECK(std::all_of(seg.lesions.voxels.begin(), seg.lesions.voxels.end(), [](float v) { return v == 0.f; }));
  const data::StudyFigures f = data::measure(seg.lesions, seg.lungs);
  CHECK(f.both.opacity_percent == 0);
  CHECK(f.infected_slices == 0);
}

TEST_CASE("batch_shape: the smallest power of two that holds the slices, at most the batch") {
  CHECK(data::batch_shape(16, 16) == 16);
  CHECK(data::batch_shape(3, 16) == 4);
  CHECK(data::batch_shape(9, 16) == 16);
  CHECK(data::batch_shape(5, 6) == 6);  // a batch that is not a power of two is a shape of its own
  CHECK(data::batch_shape(1, 8) == 1);
  CHECK_THROWS_AS(data::batch_shape(9, 8), Error);
}

TEST_CASE("segment_volume with bucketed batch shapes: blank slices fill the last batch, the results do not change") {
  // Five slices with lungs of different sizes, batches of 3: 3 + 2.
  const data::Volume ct = five_slices_of_growing_lungs();
  CovidRateNet net(NetConfig{.width = 0.0625, .cpb = true, .seed = 3});
  net.set_training(false);
  data::SegmentOptions options = small_cpu_options(3, 0.5);
  // The batch sizes the convolutions saw, from the op profile's rows.
  const auto batches_seen = [] {
    std::set<std::string> seen;
    for (const profile::OpTime& t : profile::collect())
      if (t.op == "conv2d_forward") seen.insert(t.input.substr(0, t.input.find(',')));
    return seen;
  };
  profile::set_enabled(true);
  profile::reset();
  const data::Segmentation as_they_come = data::segment_volume(ct, net, options);
  const std::set<std::string> varying = batches_seen();
  options.bucketed_batch_shape = true;
  profile::reset();
  const data::Segmentation fixed = data::segment_volume(ct, net, options);
  const std::set<std::string> bucketed = batches_seen();
  profile::set_enabled(false);
  REQUIRE(fixed.slices_segmented == 5);
  CHECK(varying == std::set<std::string>{"[2", "[3"});
  CHECK(bucketed == std::set<std::string>{"[3", "[2"});  // 2 is a power of two: no blank
  CHECK(fixed.probability.voxels == as_they_come.probability.voxels);
  CHECK(fixed.lesions.voxels == as_they_come.lesions.voxels);
  CHECK(std::count(fixed.probability.voxels.begin(), fixed.probability.voxels.end(), 0.f) < ct.voxel_count());

  // A study with fewer slices than a batch: 5 slices run as 8 (3 blanks),
  // whether the batch is 8 or 16.
  for (const int64_t batch : {8, 16}) {
    options.batch = batch;
    profile::set_enabled(true);
    profile::reset();
    const data::Segmentation small = data::segment_volume(ct, net, options);
    CHECK(batches_seen() == std::set<std::string>{"[8"});
    profile::set_enabled(false);
    CHECK(small.probability.voxels == as_they_come.probability.voxels);
  }
  // Batches of 4: 4 + 1, no blanks. (Not compared with the batches of 3 + 2:
  // the CPU's convolutions split a batch of one among threads differently, so
  // its sums may round differently.)
  options.batch = 4;
  profile::set_enabled(true);
  profile::reset();
  const data::Segmentation fours = data::segment_volume(ct, net, options);
  CHECK(batches_seen() == std::set<std::string>{"[4", "[1"});
  profile::set_enabled(false);
  CHECK(fours.slices_segmented == 5);
}

TEST_CASE("segment_volume queuing a batch ahead (the GPU's order) gives what collecting each batch at once gives") {
  // On a GPU batch i + 1 is launched before batch i is collected; run that
  // order on the CPU: every slice put back once, certainty where it belongs,
  // progress counting up to the end, the same volumes.
  const data::Volume ct = five_slices_of_growing_lungs();
  CovidRateNet net(NetConfig{.width = 0.0625, .cpb = true, .seed = 5});
  net.set_training(false);
  for (const int64_t batch : {1, 2, 8}) {
    CAPTURE(batch);
    data::SegmentOptions options = small_cpu_options(batch, 0.5);
    std::vector<std::pair<int64_t, int64_t>> reported;
    options.progress = [&](int64_t done, int64_t total) { reported.emplace_back(done, total); };
    options.queue_ahead = false;
    const data::Segmentation at_once = data::segment_volume(ct, net, options);
    const auto at_once_reports = reported;
    reported.clear();
    options.queue_ahead = true;
    const data::Segmentation ahead = data::segment_volume(ct, net, options);
    REQUIRE(ahead.slices_segmented == 5);
    CHECK(ahead.probability.voxels == at_once.probability.voxels);
    CHECK(ahead.lesions.voxels == at_once.lesions.voxels);
    CHECK(std::count(ahead.probability.voxels.begin(), ahead.probability.voxels.end(), 0.f) < ct.voxel_count());
    REQUIRE(ahead.certainty.size() == at_once.certainty.size());
    for (size_t z = 0; z < ahead.certainty.size(); ++z) {
      CHECK(std::isfinite(ahead.certainty[z]));
      CHECK(ahead.certainty[z] == at_once.certainty[z]);
    }
    CHECK(reported == at_once_reports);  // 0, then each batch's end, up to 5 of 5
    REQUIRE(!reported.empty());
    CHECK(reported.back() == std::pair<int64_t, int64_t>{5, 5});
    CHECK(ahead.seconds.network_stages.device_wait >= 0);
  }
}

TEST_CASE("segment_volume queuing ahead: an error in a later batch comes out cleanly, and the next run is whole") {
  // The weights are reloaded from the progress report of the first batch, so
  // the prepared inference form goes stale and the forward of a later batch
  // refuses to run while the batch before it is still queued: the error must
  // reach the caller (no hang, no terminate from a thread), and a run after
  // it, with the form prepared again, must give the volumes of a clean run.
  const data::Volume ct = five_slices_of_growing_lungs();
  CovidRateNet net(NetConfig{.width = 0.0625, .cpb = true, .seed = 7});
  net.set_training(false);
  net.prepare_inference(DType::F32);
  data::SegmentOptions options = small_cpu_options(1, 0.5);
  options.queue_ahead = true;
  const data::Segmentation clean = data::segment_volume(ct, net, options);
  REQUIRE(clean.slices_segmented == 5);

  const std::map<std::string, Tensor> weights = net.parameters().named_tensors();
  options.progress = [&](int64_t done, int64_t) {
    if (done == 1) net.parameters().load(weights, "the same weights");  // the form is now stale
  };
  try {
    (void)data::segment_volume(ct, net, options);
    FAIL("no error from the stale inference form");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("prepare") != std::string::npos);
  }
  options.progress = {};
  net.prepare_inference(DType::F32);
  const data::Segmentation again = data::segment_volume(ct, net, options);
  CHECK(again.probability.voxels == clean.probability.voxels);
  CHECK(again.lesions.voxels == clean.lesions.voxels);
}

TEST_CASE("a prepared study keeps the CT's grid only; its pictures come from the input domain, pixel for pixel") {
  // prepare_study drops the CT's voxels once the lungs are extracted (segment's
  // peak memory: 2096 -> 1877 MB for the 255-slice RICORD series); the
  // montage is then drawn from the input domain, which must give exactly what
  // the CT gave: for Hounsfield units the same window, for pictures the same clamp.
  const std::string dicom = test::source_dir() + "/examples/ricord-sample";
  const std::string picture = test::data_dir() + "/medseg-semiseg/train/images/0.jpg";
  for (const std::string& path : {dicom, picture}) {
    CAPTURE(path);
    const data::InputPlan plan = data::plan_inputs({path});
    REQUIRE(plan.studies.size() == 1);
    const data::PreparedStudy prepared = data::prepare_study(plan.studies[0]);
    REQUIRE(prepared.parts.size() == 1);
    const data::StudyPart& part = prepared.parts[0];
    CHECK(part.ct.voxels.empty());
    CHECK(part.ct.nz >= 1);
    REQUIRE(part.prepared.domain.voxel_count() == part.ct.voxel_count());
    data::Volume ct = data::read_any(path);
    if (path == picture) data::set_medseg_picture_orientation(ct);  // as segment reads a picture
    REQUIRE(ct.voxel_count() == part.ct.voxel_count());
    for (int64_t z = 0; z < ct.nz; ++z) {
      const data::RgbImage from_ct = data::grey_slice(ct, z), from_domain = data::grey_slice(part.prepared.domain, z);
      CHECK(from_ct.rgb == from_domain.rgb);
    }
  }
}

TEST_CASE("the montage's tiles are in the radiological display whatever order the voxels are stored in") {
  // One 8 x 6 slice of made-up anatomy stored three ways: as DICOM stores it
  // (x towards the patient's left, y towards posterior), as a RAS NIfTI does (both
  // axes reversed: it came out upside down and mirrored), and transposed. The
  // tile must be the same; for the DICOM order, the slice as stored.
  constexpr int64_t nx = 8, ny = 6;
  data::Volume lps;
  lps.nx = nx, lps.ny = ny, lps.nz = 1;
  lps.voxels.resize(nx * ny);
  data::LabelVolume lungs = data::same_grid<uint8_t>(lps, data::Intensity::Label);
  data::LabelVolume lesions = lungs;
  for (int64_t y = 0; y < ny; ++y)
    for (int64_t x = 0; x < nx; ++x) {
      lps.at(x, y, 0) = static_cast<float>(-1000 + 37 * x + 91 * y);  // no symmetry
      lungs.at(x, y, 0) = x < 3 ? data::kRightLung : x > 4 ? data::kLeftLung : data::kNoLung;
      lesions.at(x, y, 0) = x == 1 && y >= 2;
    }
  const auto stored = [&](bool reverse, bool transpose) {
    data::Volume ct = data::same_grid(lps, lps.intensity);
    data::LabelVolume l = data::same_grid<uint8_t>(lps, data::Intensity::Label), m = l;
    if (transpose) {
      std::swap(ct.nx, ct.ny), std::swap(l.nx, l.ny), std::swap(m.nx, m.ny);
      for (data::VolumeGrid* g : {static_cast<data::VolumeGrid*>(&ct), static_cast<data::VolumeGrid*>(&l),
                                  static_cast<data::VolumeGrid*>(&m)})
        g->row_dir = {0, 1, 0}, g->col_dir = {1, 0, 0};
    }
    if (reverse)
      for (data::VolumeGrid* g : {static_cast<data::VolumeGrid*>(&ct), static_cast<data::VolumeGrid*>(&l),
                                  static_cast<data::VolumeGrid*>(&m)})
        g->row_dir = {-g->row_dir[0], -g->row_dir[1], 0}, g->col_dir = {-g->col_dir[0], -g->col_dir[1], 0};
    for (int64_t y = 0; y < ny; ++y)
      for (int64_t x = 0; x < nx; ++x) {
        const int64_t sx = reverse ? nx - 1 - x : x, sy = reverse ? ny - 1 - y : y;  // patient position
        const int64_t i = transpose ? sx * ny + sy : sy * nx + sx;                 // where it is stored
        ct.voxels[i] = lps.at(x, y, 0), l.voxels[i] = lungs.at(x, y, 0), m.voxels[i] = lesions.at(x, y, 0);
      }
    return data::affected_tile(ct, l, m, 0);
  };
  const data::RgbImage as_dicom = data::affected_tile(lps, lungs, lesions, 0);
  CHECK(as_dicom.rgb == stored(false, false).rgb);
  CHECK(as_dicom.rgb == stored(true, false).rgb);
  CHECK(as_dicom.rgb == stored(false, true).rgb);
  CHECK(as_dicom.rgb == stored(true, true).rgb);
  // The DICOM order is drawn as stored: the right lung's outline (green) on the
  // picture's left, the lesion's (red) inside it, the middle column grey.
  const data::RgbImage plain = data::grey_slice(lps, 0);
  for (const int64_t y : {int64_t{0}, ny - 1}) {
    CHECK(as_dicom.rgb[3 * (y * nx + 3 + 1) + 1] == plain.rgb[3 * (y * nx + 3 + 1) + 1]);
    CHECK(as_dicom.rgb[3 * (y * nx + 0)] < as_dicom.rgb[3 * (y * nx + 0) + 1]);  // green: right lung, left side
  }
  CHECK(as_dicom.rgb[3 * (3 * nx + 1)] > as_dicom.rgb[3 * (3 * nx + 1) + 1]);  // red: the lesion
}

TEST_CASE("figures: areas, volumes, opacity per lung and the infected-slice rule") {
  data::LabelVolume lungs, lesions;
  for (data::LabelVolume* v : {&lungs, &lesions}) {
    v->nx = 10, v->ny = 10, v->nz = 2;
    v->spacing = {0.5, 0.5, 2.0};
    v->voxels.assign(200, 0);
  }
  // Slice 0: 40 px right lung, 40 px left lung; 2 lesion px in the right lung (2.5%).
  // Slice 1: 100 px left lung; no lesion.
  for (int64_t i = 0; i < 40; ++i) lungs.voxels[i] = data::kRightLung, lungs.voxels[60 + i] = data::kLeftLung;
  for (int64_t i = 100; i < 200; ++i) lungs.voxels[i] = data::kLeftLung;
  lesions.voxels[3] = lesions.voxels[4] = 1;
  const data::StudyFigures f = data::measure(lesions, lungs);
  REQUIRE(f.slices.size() == 2);
  CHECK(f.slices[0].lesion_pixels == 2);
  CHECK(f.slices[0].lung_pixels == 80);
  CHECK(f.slices[0].lesion_mm2 == doctest::Approx(0.5));
  CHECK(f.slices[0].infection_rate == doctest::Approx(2.0 / 80));
  CHECK(f.slices[0].infected);
  CHECK_FALSE(f.slices[1].infected);
  CHECK(f.infected_slices == 1);
  CHECK(f.right.opacity_percent == doctest::Approx(5.0));
  CHECK(f.left.opacity_percent == 0);
  CHECK(f.both.opacity_percent == doctest::Approx(100.0 * 2 / 180));
  CHECK(f.both.lung_ml == doctest::Approx(180 * 0.5 * 0.5 * 2.0 / 1000));
  CHECK(data::most_affected_slices(f, 6) == std::vector<int64_t>{0});
  // A gantry tilt of 25 degrees: each slice 2 mm along a direction sheared from
  // the normal, so the planes are 2 cos(25) mm apart, and so much less volume.
  {
    data::LabelVolume tilted_lungs = lungs, tilted_lesions = lesions;
    const double tilt = 25 * M_PI / 180;
    for (data::LabelVolume* v : {&tilted_lungs, &tilted_lesions}) v->slice_dir = {0, std::sin(tilt), std::cos(tilt)};
    const data::StudyFigures t = data::measure(tilted_lesions, tilted_lungs);
    CHECK(t.both.lung_ml == doctest::Approx(180 * 0.5 * 0.5 * 2.0 * std::cos(tilt) / 1000));
    CHECK(t.slices[0].lung_mm2 == doctest::Approx(f.slices[0].lung_mm2));  // areas in the slice's plane
    CHECK(t.both.opacity_percent == doctest::Approx(f.both.opacity_percent));
  }
  CHECK_FALSE(f.high_opacity_known);  // no input domain given: not in HU

  // With the input domain of an HU volume: lesion voxels at -200 HU or more
  // are high opacity, -201 HU is not (the threshold compares equal at -200).
  data::Volume ct;
  ct.nx = 10, ct.ny = 10, ct.nz = 2;
  ct.spacing = lungs.spacing;
  ct.intensity = data::Intensity::HounsfieldUnits;
  ct.voxels.assign(200, -800.f);
  ct.voxels[3] = -200.f, ct.voxels[4] = -201.f;
  ct.voxels[5] = 40.f;  // dense but no lesion there
  const data::Volume domain = data::to_input_domain(ct);
  const data::StudyFigures h = data::measure(lesions, lungs, &domain);
  CHECK(h.high_opacity_known);
  CHECK(h.right.high_opacity_voxels == 1);
  CHECK(h.both.high_opacity_voxels == 1);
  CHECK(h.right.high_opacity_percent == doctest::Approx(100.0 / 40));
  CHECK(h.both.high_opacity_ml == doctest::Approx(0.5 * 0.5 * 2.0 / 1000));
  CHECK(h.left.high_opacity_percent == 0);
  CHECK(h.slices[0].high_opacity_pixels == 1);
  CHECK(h.slices[1].high_opacity_pixels == 0);
  // The plot draws a bar's high-opacity share dark at its foot, only with HU figures.
  auto dark_pixels = [](const data::RgbImage& image) {
    int64_t count = 0;
    for (size_t p = 0; p + 2 < image.rgb.size(); p += 3)
      count += image.rgb[p] == 110 && image.rgb[p + 1] == 0 && image.rgb[p + 2] == 0;
    return count;
  };
  CHECK(dark_pixels(data::infection_rate_plot(h, 200, 100)) > 0);
  CHECK(dark_pixels(data::infection_rate_plot(f, 200, 100)) == 0);

  const data::RgbImage plot = data::infection_rate_plot(f, 200, 100);
  CHECK(plot.width == 200);
  CHECK(plot.height == 100);
  // The infected slice's bar is red somewhere in the left half.
  bool red = false;
  for (int64_t y = 0; y < plot.height; ++y)
    for (int64_t x = 0; x < plot.width / 2; ++x) {
      const uint8_t* p = &plot.rgb[(y * plot.width + x) * 3];
      red |= p[0] > 200 && p[1] < 80 && p[2] < 80;
    }
  CHECK(red);
}

TEST_CASE("the network layout permutation follows the direction vectors") {
  data::Volume v;
  v.nx = 4, v.ny = 3, v.nz = 1;
  v.voxels.assign(12, 0.f);
  int64_t nx = 0, ny = 0;
  SUBCASE("a radiological axial slice is transposed, as the training pictures are") {
    const std::vector<int64_t> order = data::network_layout_order(v, nx, ny);
    CHECK(nx == 3);
    CHECK(ny == 4);
    CHECK(order[1] == 4);  // network (x=1, y=0) = slice (x=0, y=1)
    CHECK(std::set<int64_t>(order.begin(), order.end()).size() == 12);
  }
  SUBCASE("a picture in the training layout is left as it is") {
    data::set_medseg_picture_orientation(v);
    const std::vector<int64_t> order = data::network_layout_order(v, nx, ny);
    CHECK(nx == 4);
    for (int64_t p = 0; p < 12; ++p) CHECK(order[p] == p);
  }
}

// A box's columns [x0, x0 + nx) and rows [y0, y0 + ny), in one comparison.
std::string box_text(const data::CropBox& b) {
  std::ostringstream os;
  os << b.x0 << "+" << b.nx << ", " << b.y0 << "+" << b.ny;
  return os.str();
}

TEST_CASE("the network looks at the lungs' bounding box, as the training pictures are cut") {
  // A 20 x 10 slice with lung at columns 6..13, rows 2..5.
  std::vector<float> lungs(200, 0.f);
  for (int64_t y = 2; y <= 5; ++y)
    for (int64_t x = 6; x <= 13; ++x) lungs[y * 20 + x] = x < 10 ? 1.f : 2.f;
  // Tight; then a quarter of the box per side (8 * 0.25 = 2 columns, 4 * 0.25 = 1 row);
  // then a whole box per side, clamped to the slice.
  CHECK(box_text(data::lung_crop_box(lungs.data(), 20, 10, 0.0)) == "6+8, 2+4");
  CHECK(box_text(data::lung_crop_box(lungs.data(), 20, 10, 0.25)) == "4+12, 1+6");
  CHECK(box_text(data::lung_crop_box(lungs.data(), 20, 10, 1.0)) == "0+20, 0+10");
  // No lung, or a negative margin: the whole slice.
  const std::vector<float> none(200, 0.f);
  CHECK(box_text(data::lung_crop_box(none.data(), 20, 10, 0.02)) == "0+20, 0+10");
  CHECK(box_text(data::lung_crop_box(lungs.data(), 20, 10, -1.0)) == "0+20, 0+10");
}

TEST_CASE("segment_volume: outside the lungs' box the probability is 0; without the cut it is not") {
  // A body disc with two dark lungs in its upper half, in a wide field of view.
  data::Volume ct = air_ct(128, 1);
  for (int64_t y = 0; y < ct.ny; ++y)
    for (int64_t x = 0; x < ct.nx; ++x) {
      const int64_t dx = x - 64, dy = y - 64;
      if (dx * dx + dy * dy < 56 * 56) ct.at(x, y, 0) = 40.f;
      for (int64_t cx : {40, 88})
        if ((x - cx) * (x - cx) * 4 + (y - 50) * (y - 50) * 9 < 18 * 18 * 4) ct.at(x, y, 0) = -850.f;
    }
  CovidRateNet net(NetConfig{.width = 0.0625, .cpb = true, .seed = 3});
  net.set_training(false);
  data::SegmentOptions options = small_cpu_options(1, 0.0);
  const data::Segmentation cut = data::segment_volume(ct, net, options);
  REQUIRE(cut.slices_segmented == 1);
  int64_t nx = 0, ny = 0;
  const std::vector<int64_t> order = data::network_layout_order(ct, nx, ny);
  std::vector<float> lung_layout(order.size());
  for (size_t p = 0; p < order.size(); ++p) lung_layout[p] = cut.lungs.voxels[order[p]];
  const data::CropBox box = data::lung_crop_box(lung_layout.data(), nx, ny, options.crop_margin);
  CHECK(box.nx < nx / 2 + 8);  // the cut is much smaller than the slice
  int64_t outside = 0, outside_nonzero = 0, inside_nonzero = 0;
  for (int64_t y = 0; y < ny; ++y)
    for (int64_t x = 0; x < nx; ++x) {
      const bool in = x >= box.x0 && x < box.x0 + box.nx && y >= box.y0 && y < box.y0 + box.ny;
      const float p = cut.probability.voxels[order[y * nx + x]];
      outside += !in;
      outside_nonzero += !in && p != 0.f;
      inside_nonzero += in && p != 0.f;
    }
  CHECK(outside > 0);
  CHECK(outside_nonzero == 0);
  CHECK(inside_nonzero == box.nx * box.ny);  // a sigmoid is never exactly 0
  options.crop_margin = -1;
  const data::Segmentation whole = data::segment_volume(ct, net, options);
  CHECK(std::count(whole.probability.voxels.begin(), whole.probability.voxels.end(), 0.f) == 0);

  // One lung found (the other filled with tissue): no cut, whatever the margin.
  for (int64_t y = 0; y < ct.ny; ++y)
    for (int64_t x = 0; x < 64; ++x)
      if (ct.at(x, y, 0) == -850.f) ct.at(x, y, 0) = 40.f;
  options.crop_margin = 0.02;
  const data::Segmentation one_lung = data::segment_volume(ct, net, options);
  REQUIRE(one_lung.slices_segmented == 1);
  CHECK(std::count(one_lung.lungs.voxels.begin(), one_lung.lungs.voxels.end(), 0.f) < ct.voxel_count());
  CHECK(std::count(one_lung.probability.voxels.begin(), one_lung.probability.voxels.end(), 0.f) == 0);
}
