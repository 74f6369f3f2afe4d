// Lung extraction and the morphology under it: exact answers on small drawn
// masks and a drawn chest phantom, then Dice against expert lung masks on real CT.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <filesystem>
#include <string>
#include <tuple>
#include <utility>

#include "data/lungs.h"
#include "data/dataset.h"
#include "data/dicom.h"
#include "data/image2d.h"
#include "data/input_domain.h"
#include "data/morphology.h"
#include "data/nifti.h"
#include "nn/error.h"
#include "tests/support/test_support.h"

using namespace covidrate;
using namespace covidrate::data;

namespace {

bool in_ellipse(double x, double y, double cx, double cy, double rx, double ry) {
  const double dx = (x - cx) / rx, dy = (y - cy) / ry;
  return dx * dx + dy * dy <= 1.0;
}

// A 128x128 axial chest in HU: air around a soft-tissue body holding two lungs
// (the right one on the image's left), a trachea between them, a vessel inside
// the right lung and a thin consolidation plaque on the left lung's outer wall.
struct Phantom {
  Volume ct, truth;
};
Phantom chest_phantom() {
  Phantom p;
  p.ct.nx = p.ct.ny = 128;
  p.ct.nz = 1;
  p.ct.voxels.assign(128 * 128, -1000.f);
  p.truth = p.ct;
  p.truth.intensity = Intensity::Label;
  std::fill(p.truth.voxels.begin(), p.truth.voxels.end(), 0.f);
  for (int y = 0; y < 128; ++y)
    for (int x = 0; x < 128; ++x) {
      float& v = p.ct.voxels[y * 128 + x];
      float& t = p.truth.voxels[y * 128 + x];
      if (in_ellipse(x, y, 64, 64, 60, 45)) v = 40;
      if (in_ellipse(x, y, 38, 62, 20, 30)) v = -850, t = kRightLung;
      if (in_ellipse(x, y, 90, 62, 20, 30)) v = -850, t = kLeftLung;
      if (in_ellipse(x, y, 64, 40, 4, 4)) v = -1000;                    // trachea
      if (in_ellipse(x, y, 38, 62, 3, 3)) v = 60;                       // vessel: still lung
      if (t == float(kLeftLung) && x > 107 && std::abs(y - 62) < 2) v = 30;   // plaque narrower than the closing disk
    }
  return p;
}

}  // namespace

TEST_CASE("components_2d counts 8-connected pieces and their sizes") {
  // Diagonal neighbours touch in 8-connectivity: a diagonal pair and a vertical pair.
  const uint8_t m[] = {1, 0, 0, 0,  //
                       0, 1, 0, 0,  //
                       0, 0, 0, 1,  //
                       0, 0, 0, 1};
  const Components c = components_2d(m, 4, 4);
  CHECK(c.count == 2);
  CHECK(c.size[c.largest()] == 2);
  CHECK(c.label[0] == c.label[5]);
  CHECK(c.label[11] == c.label[15]);
  CHECK(c.label[0] != c.label[11]);
}

TEST_CASE("components_3d joins slices by faces only") {
  // Voxel (0,0,0) and (1,1,1) touch by a corner: two components; (0,0,1) joins the first.
  uint8_t m[8] = {};
  m[0] = 1;          // (0,0,0)
  m[4 + 3] = 1;      // (1,1,1)
  CHECK(components_3d(m, 2, 2, 2).count == 2);
  m[4] = 1;          // (0,0,1)
  CHECK(components_3d(m, 2, 2, 2).count == 2);
  m[4 + 1] = 1;      // (1,0,1) now bridges (0,0,1) and (1,1,1)
  CHECK(components_3d(m, 2, 2, 2).count == 1);
}

// The plain definition of components: a flood fill from each unlabelled pixel
// in raster order (components numbered in that order); `neighbours(p, visit)`
// calls visit(q) for each neighbour q of p, which sets the connectivity.
template <typename Neighbours>
static Components flood_reference(const std::vector<uint8_t>& m, Neighbours&& neighbours) {
  Components c;
  c.label.assign(m.size(), 0);
  c.size.push_back(0);
  std::vector<int64_t> stack;
  for (int64_t start = 0; start < int64_t(m.size()); ++start) {
    if (!m[start] || c.label[start]) continue;
    c.label[start] = ++c.count;
    c.size.push_back(0);
    stack.push_back(start);
    while (!stack.empty()) {
      const int64_t p = stack.back();
      stack.pop_back();
      ++c.size[c.count];
      neighbours(p, [&](int64_t i) {
        if (m[i] && !c.label[i]) {
          c.label[i] = c.count;
          stack.push_back(i);
        }
      });
    }
  }
  return c;
}

// 6-connected, over a whole volume.
static Components flood_3d_reference(const std::vector<uint8_t>& m, int64_t nx, int64_t ny, int64_t nz) {
  return flood_reference(m, [&](int64_t p, auto&& visit) {
    const int64_t x = p % nx, y = (p / nx) % ny, z = p / (nx * ny);
    const int64_t next[6][3] = {{x - 1, y, z}, {x + 1, y, z}, {x, y - 1, z}, {x, y + 1, z}, {x, y, z - 1}, {x, y, z + 1}};
    for (const auto& q : next)
      if (q[0] >= 0 && q[0] < nx && q[1] >= 0 && q[1] < ny && q[2] >= 0 && q[2] < nz) visit((q[2] * ny + q[1]) * nx + q[0]);
  });
}

// 4- or 8-connected, in one slice.
static Components flood_2d_reference(const std::vector<uint8_t>& m, int64_t nx, int64_t ny, bool eight) {
  return flood_reference(m, [&](int64_t p, auto&& visit) {
    for (int64_t dy = -1; dy <= 1; ++dy)
      for (int64_t dx = -1; dx <= 1; ++dx) {
        if ((dx == 0 && dy == 0) || (!eight && dx != 0 && dy != 0)) continue;
        const int64_t x = p % nx + dx, y = p / nx + dy;
        if (x >= 0 && x < nx && y >= 0 && y < ny) visit(y * nx + x);
      }
  });
}

TEST_CASE("components_3d (slices in parallel, joined by union-find) equals a 3-D flood fill") {
  std::mt19937 rng(7);
  // Densities below and above 3-D site percolation (~0.31): many small pieces,
  // then pieces that wind through many slices and join late.
  for (const auto& [nx, ny, nz, density] : {std::tuple{7, 5, 9, 0.3}, std::tuple{33, 17, 12, 0.5},
                                            std::tuple{64, 64, 20, 0.35}, std::tuple{40, 30, 1, 0.6},
                                            std::tuple{16, 16, 16, 0.0}, std::tuple{16, 16, 16, 1.0}}) {
    CAPTURE(nx);
    CAPTURE(nz);
    CAPTURE(density);
    std::bernoulli_distribution on(density);
    std::vector<uint8_t> m(size_t(nx) * ny * nz);
    for (auto& v : m) v = on(rng);
    const Components want = flood_3d_reference(m, nx, ny, nz);
    const Components got = components_3d(m.data(), nx, ny, nz);
    CHECK(got.count == want.count);
    CHECK(got.size == want.size);
    CHECK(got.label == want.label);  // the same numbering, not only the same partition
  }
}

TEST_CASE("components_2d (runs joined by union-find) equals an 8-connected flood fill; fill_holes_2d a 4-connected one") {
  std::mt19937 rng(3);
  // Around 2-D site percolation (0.41 for 8 neighbours, 0.59 for 4): pieces of
  // every shape, corner contacts, and runs that join only several rows later.
  for (const auto& [nx, ny, density] : {std::tuple{1, 1, 1.0}, std::tuple{9, 1, 0.5}, std::tuple{1, 9, 0.5},
                                        std::tuple{23, 17, 0.3}, std::tuple{64, 48, 0.41}, std::tuple{64, 48, 0.59},
                                        std::tuple{50, 50, 0.8}, std::tuple{12, 12, 0.0}, std::tuple{12, 12, 1.0}}) {
    CAPTURE(nx);
    CAPTURE(ny);
    CAPTURE(density);
    std::bernoulli_distribution on(density);
    std::vector<uint8_t> m(size_t(nx) * ny);
    for (auto& v : m) v = on(rng);
    const Components want = flood_2d_reference(m, nx, ny, true);
    const Components got = components_2d(m.data(), nx, ny);
    CHECK(got.count == want.count);
    CHECK(got.size == want.size);
    CHECK(got.label == want.label);  // the same numbering, not only the same partition
    // Holes: 4-connected background pieces that touch no border, up to a size.
    std::vector<uint8_t> background(m.size());
    for (size_t i = 0; i < m.size(); ++i) background[i] = !m[i];
    const Components holes = flood_2d_reference(background, nx, ny, false);
    for (const int64_t max_hole : {int64_t{2}, INT64_MAX}) {
      std::vector<uint8_t> filled = m, expected = m;
      fill_holes_2d(filled.data(), nx, ny, max_hole);
      for (int64_t p = 0; p < int64_t(m.size()); ++p) {
        const int32_t k = holes.label[p];
        if (!k || holes.size[k] > max_hole) continue;
        bool open = false;
        for (int64_t q = 0; q < int64_t(m.size()); ++q)
          if (holes.label[q] == k && (q % nx == 0 || q % nx == nx - 1 || q / nx == 0 || q / nx == ny - 1)) open = true;
        if (!open) expected[p] = 1;
      }
      CHECK(filled == expected);
    }
  }
}

TEST_CASE("fill_holes_2d fills enclosed background and nothing open to the border") {
  std::vector<uint8_t> m(7 * 7, 0);
  for (int i = 1; i < 6; ++i) m[1 * 7 + i] = m[5 * 7 + i] = m[i * 7 + 1] = m[i * 7 + 5] = 1;
  fill_holes_2d(m.data(), 7, 7);
  CHECK(m[3 * 7 + 3] == 1);
  CHECK(m[0] == 0);
  m.assign(49, 0);
  for (int i = 1; i < 6; ++i) m[1 * 7 + i] = m[i * 7 + 1] = m[i * 7 + 5] = 1;  // a U, open at the bottom
  fill_holes_2d(m.data(), 7, 7);
  CHECK(m[3 * 7 + 3] == 0);
}

TEST_CASE("squared_distance_to_background equals brute force on a random mask") {
  const int64_t nx = 23, ny = 17;
  std::mt19937 rng(11);
  std::vector<uint8_t> m(nx * ny);
  for (auto& v : m) v = rng() % 5 != 0;  // mostly foreground, scattered background
  for (bool border : {true, false}) {
    const auto d = squared_distance_to_background(m.data(), nx, ny, border);
    for (int64_t y = 0; y < ny; ++y)
      for (int64_t x = 0; x < nx; ++x) {
        int64_t best = INT64_MAX;
        for (int64_t v = 0; v < ny; ++v)
          for (int64_t u = 0; u < nx; ++u)
            if (!m[v * nx + u]) best = std::min(best, (u - x) * (u - x) + (v - y) * (v - y));
        if (border)  // the nearest pixel outside the image
          best = std::min({best, (x + 1) * (x + 1), (nx - x) * (nx - x), (y + 1) * (y + 1), (ny - y) * (ny - y)});
        CHECK(d[y * nx + x] == float(best));
      }
  }
}

TEST_CASE("disk morphology matches the Euclidean definition") {
  const int64_t n = 41;
  std::vector<uint8_t> m(n * n, 0);
  m[20 * n + 20] = 1;
  dilate_disk(m.data(), n, n, 5.f);
  int64_t area = 0;
  for (int64_t y = 0; y < n; ++y)
    for (int64_t x = 0; x < n; ++x) {
      const bool inside = (x - 20) * (x - 20) + (y - 20) * (y - 20) <= 25;
      CHECK(bool(m[y * n + x]) == inside);
      area += m[y * n + x];
    }
  CHECK(area == 81);  // lattice points in a radius-5 disk
  // Eroding it by radius 5 keeps only the pixels more than 5 from the outside:
  // the centre (its nearest outside pixel is sqrt(26) away).
  erode_disk(m.data(), n, n, 5.f);
  CHECK(m[20 * n + 20] == 1);
  CHECK(std::count(m.begin(), m.end(), 1) == 1);
  // Closing bridges a 2-pixel gap between two blocks and never removes a pixel.
  std::vector<uint8_t> g(n * n, 0);
  for (int64_t y = 10; y < 30; ++y)
    for (int64_t x = 5; x < 36; ++x) g[y * n + x] = (x < 19 || x > 20);
  const std::vector<uint8_t> before = g;
  close_disk(g.data(), n, n, 3.f);
  CHECK(g[20 * n + 19] == 1);
  for (int64_t p = 0; p < n * n; ++p) CHECK(g[p] >= before[p]);
}

TEST_CASE("convex_hull_2d fills between the outermost pixels and nothing beyond") {
  // A U: the hull is its bounding rectangle, open side included.
  const int64_t nx = 12, ny = 8;
  std::vector<uint8_t> m(nx * ny, 0), h(nx * ny, 7);
  for (int64_t y = 1; y < 7; ++y) m[y * nx + 2] = m[y * nx + 9] = 1;
  for (int64_t x = 2; x < 10; ++x) m[6 * nx + x] = 1;
  convex_hull_2d(m.data(), nx, ny, h.data());
  for (int64_t y = 0; y < ny; ++y)
    for (int64_t x = 0; x < nx; ++x) CHECK(h[y * nx + x] == (y >= 1 && y <= 6 && x >= 2 && x <= 9 ? 1 : 0));
  // A triangle: (0,0), (8,0), (0,8); pixel centres on the slanted edge count as inside.
  std::fill(m.begin(), m.end(), uint8_t(0));
  m[0] = m[8] = m[7 * nx + 0] = 1;
  convex_hull_2d(m.data(), nx, ny, h.data());
  for (int64_t y = 0; y < ny; ++y)
    for (int64_t x = 0; x < nx; ++x) CHECK(h[y * nx + x] == (x + y * 8 / 7.0 <= 8 + 1e-9 && x <= 8 ? 1 : 0));
  // One pixel is its own hull; an empty mask has none.
  std::fill(m.begin(), m.end(), uint8_t(0));
  m[3 * nx + 4] = 1;
  convex_hull_2d(m.data(), nx, ny, h.data());
  CHECK(std::count(h.begin(), h.end(), 1) == 1);
  CHECK(h[3 * nx + 4] == 1);
  m[3 * nx + 4] = 0;
  convex_hull_2d(m.data(), nx, ny, h.data());
  CHECK(std::count(h.begin(), h.end(), 0) == nx * ny);
}

TEST_CASE("classical extractor on a drawn chest: sides, trachea, vessel, pleural consolidation") {
  const Phantom p = chest_phantom();
  const LungSegmentation seg = ClassicalLungExtractor().extract(p.ct);
  REQUIRE(seg.slice_has_lung.size() == 1);
  CHECK(seg.slice_has_lung[0] == 1);
  CHECK(seg.labels.at(64, 40, 0) == kNoLung);     // trachea removed
  CHECK(seg.labels.at(38, 62, 0) == kRightLung);  // vessel filled in, on the image's left
  CHECK(seg.labels.at(109, 62, 0) == kLeftLung);  // plaque kept by the closing
  CHECK(dice(seg.labels, p.truth, kRightLung) > 0.97);
  CHECK(dice(seg.labels, p.truth, kLeftLung) > 0.95);
}

TEST_CASE("consolidation wider than the closing disk against the chest wall is lung; a dome inside a crescent is not") {
  Phantom p = chest_phantom();
  // Left lung: its outer third turned to soft tissue over 24 rows, far wider than
  // the closing disk (4 % of the body width, about 5 px).
  for (int y = 50; y < 74; ++y)
    for (int x = 100; x < 128; ++x)
      if (p.truth.voxels[y * 128 + x] == float(kLeftLung)) p.ct.voxels[y * 128 + x] = 30;
  // Right lung: a basal crescent wrapped around a soft-tissue dome on its inner
  // side, towards the body centre (the liver seen through the lung base).
  for (int y = 0; y < 128; ++y)
    for (int x = 0; x < 128; ++x)
      if (p.truth.voxels[y * 128 + x] == float(kRightLung) && in_ellipse(x, y, 52, 62, 18, 20)) {
        p.ct.voxels[y * 128 + x] = 50;
        p.truth.voxels[y * 128 + x] = kNoLung;
      }
  const LungSegmentation seg = ClassicalLungExtractor().extract(p.ct);
  CHECK(seg.labels.at(104, 62, 0) == kLeftLung);  // the consolidation's middle
  CHECK(seg.labels.at(44, 62, 0) == kNoLung);     // the dome stays out
  CHECK(dice(seg.labels, p.truth, kLeftLung) > 0.97);
  CHECK(dice(seg.labels, p.truth, kRightLung) > 0.95);
  // Without the dent step the consolidation is left out: the closing alone cannot reach it.
  ClassicalLungOptions no_dents;
  no_dents.min_dent_area = 1;
  CHECK(ClassicalLungExtractor(no_dents).extract(p.ct).labels.at(104, 62, 0) == kNoLung);
}

TEST_CASE("classical extractor splits lungs that touch across the midline") {
  Phantom p = chest_phantom();
  // An air bridge joins the lungs (as at the anterior junction line).
  for (int y = 60; y < 64; ++y)
    for (int x = 56; x < 72; ++x) {
      p.ct.voxels[y * 128 + x] = -850;
      p.truth.voxels[y * 128 + x] = x < 64 ? kRightLung : kLeftLung;
    }
  const LungSegmentation seg = ClassicalLungExtractor().extract(p.ct);
  CHECK(seg.labels.at(30, 62, 0) == kRightLung);
  CHECK(seg.labels.at(98, 62, 0) == kLeftLung);
  CHECK(dice(seg.labels, p.truth, kRightLung) > 0.95);
  CHECK(dice(seg.labels, p.truth, kLeftLung) > 0.95);
}

TEST_CASE("in a volume, gas that no lung connects to in 3-D is not lung") {
  // Slice 0: abdomen with a gas bubble off the midline (lung-sized in 2-D);
  // slices 1-3: the chest.
  const Phantom chest = chest_phantom();
  Volume ct = chest.ct;
  ct.nz = 4;
  ct.voxels.clear();
  std::vector<float> abdomen = chest.ct.voxels;
  for (int y = 0; y < 128; ++y)
    for (int x = 0; x < 128; ++x) {
      float& v = abdomen[y * 128 + x];
      if (v != -1000.f || in_ellipse(x, y, 64, 64, 60, 45)) v = 40;
      if (in_ellipse(x, y, 85, 100, 10, 5)) v = -1000;  // bowel gas, under no lung
    }
  ct.voxels.insert(ct.voxels.end(), abdomen.begin(), abdomen.end());
  for (int z = 1; z < 4; ++z) ct.voxels.insert(ct.voxels.end(), chest.ct.voxels.begin(), chest.ct.voxels.end());
  const LungSegmentation seg = ClassicalLungExtractor().extract(ct);
  CHECK(seg.slice_has_lung == std::vector<uint8_t>{0, 1, 1, 1});
  CHECK(seg.labels.at(85, 100, 0) == kNoLung);
  CHECK(seg.labels.at(90, 62, 2) == kLeftLung);
}

TEST_CASE("in a volume, a trachea that touches a lung through a thin wall is followed from the slices where it does not") {
  // Slice 0: a main bronchus joins the trachea to the right lung (so that in 3-D
  // the airway is part of the lungs' air, as in a real chest). Slice 1: the drawn
  // chest, trachea apart. Slices 2-3: a tongue of the right lung reaches the
  // trachea's corner (8-connected: one air piece in 2-D).
  const Phantom chest = chest_phantom();
  Volume ct = chest.ct;
  ct.nz = 4;
  ct.voxels.clear();
  std::vector<float> bronchus = chest.ct.voxels, touching = chest.ct.voxels;
  for (int y = 39; y < 42; ++y)
    for (int x = 50; x < 62; ++x) bronchus[y * 128 + x] = -1000;
  for (int y = 41; y < 43; ++y)
    for (int x = 52; x < 60; ++x) touching[y * 128 + x] = -850;
  REQUIRE(touching[40 * 128 + 60] == -1000.f);  // the trachea's pixel diagonal to the tongue's tip (59, 41)
  REQUIRE(touching[40 * 128 + 59] == 40.f);
  const std::vector<float>* slices[] = {&bronchus, &chest.ct.voxels, &touching, &touching};
  for (const std::vector<float>* slice : slices)
    ct.voxels.insert(ct.voxels.end(), slice->begin(), slice->end());
  const LungSegmentation seg = ClassicalLungExtractor().extract(ct);
  for (int z = 0; z < 4; ++z) {
    CAPTURE(z);
    CHECK(seg.labels.at(64, 40, z) == kNoLung);  // the trachea
    CHECK(seg.labels.at(38, 62, z) == kRightLung);
  }
  CHECK(seg.labels.at(54, 41, 3) == kRightLung);  // the tongue stays lung
  // One slice alone has no neighbour to follow the trachea from: it stays in the lung.
  Volume one = chest.ct;
  one.voxels = touching;
  CHECK(ClassicalLungExtractor().extract(one).labels.at(64, 40, 0) == kRightLung);
}

TEST_CASE("one HU slice alone: pure gas is not lung; one picture: the rule is off") {
  // An abdomen-like slice: the lungs turned to soft tissue, a big gas bubble off
  // the midline (stomach), with a few denser pixels as in real gas.
  Phantom p = chest_phantom();
  for (int y = 0; y < 128; ++y)
    for (int x = 0; x < 128; ++x) {
      float& v = p.ct.voxels[y * 128 + x];
      if (v == -850.f || v == 60.f || v == 30.f) v = 40;
      if (in_ellipse(x, y, 88, 58, 14, 10)) v = (x + y) % 5 == 0 ? -900.f : -1000.f;
    }
  const LungSegmentation seg = ClassicalLungExtractor().extract(p.ct);
  CHECK(seg.count(kLeftLung) + seg.count(kRightLung) == 0);
  CHECK(seg.slice_has_lung[0] == 0);
  // The drawn chest's lungs (-850 HU) are not gas.
  CHECK(ClassicalLungExtractor().extract(chest_phantom().ct).count(kLeftLung) > 1000);
  // As an 8-bit picture (where aerated lung may be as dark as air) the bubble is kept.
  Volume picture = to_input_domain(p.ct);
  CHECK(ClassicalLungExtractor().extract(picture).labels.at(88, 58, 0) == kLeftLung);
}

TEST_CASE("classical extractor reads the sides from the geometry") {
  Phantom p = chest_phantom();
  p.ct.row_dir = {-1, 0, 0};  // x now runs towards the patient's right
  const LungSegmentation seg = ClassicalLungExtractor().extract(p.ct);
  CHECK(seg.labels.at(38, 62, 0) == kLeftLung);
  CHECK(seg.labels.at(90, 62, 0) == kRightLung);
}

TEST_CASE("classical extractor flags slices without lung and refuses empty input") {
  Phantom p = chest_phantom();
  for (float& v : p.ct.voxels)
    if (v == -850.f) v = 40.f;  // lungs turned to soft tissue: an abdomen-like slice with only the trachea's air
  const LungSegmentation seg = ClassicalLungExtractor().extract(p.ct);
  CHECK(seg.slice_has_lung[0] == 0);
  Volume empty;
  CHECK_THROWS_AS(ClassicalLungExtractor().extract(empty), Error);
}

TEST_CASE("a sagittal or coronal stack is refused, not read as axial slices") {
  Phantom p = chest_phantom();
  p.ct.source = "stack.nii";
  p.ct.row_dir = {0, 1, 0}, p.ct.col_dir = {0, 0, -1}, p.ct.slice_dir = {1, 0, 0};
  CHECK_THROWS_WITH_AS(ClassicalLungExtractor().extract(p.ct), doctest::Contains("stack.nii: its slices are sagittal"),
                       Error);
  p.ct.row_dir = {1, 0, 0}, p.ct.col_dir = {0, 0, -1}, p.ct.slice_dir = {0, 1, 0};
  CHECK_THROWS_WITH_AS(ClassicalLungExtractor().extract(p.ct), doctest::Contains("its slices are coronal"), Error);
  // Tilted axial slices (a gantry tilt of 20 degrees) are axial.
  p.ct.row_dir = {1, 0, 0}, p.ct.col_dir = {0, 0.940, -0.342}, p.ct.slice_dir = {0, 0.342, 0.940};
  CHECK(ClassicalLungExtractor().extract(p.ct).slice_has_lung[0] == 1);
}

TEST_CASE("pictures that are no chest have no lung: noise, a uniform grey, one pixel") {
  // Each used to come out as lung over the whole picture (lung-grey everywhere,
  // or one dark piece across it), and segment then reported its opacity.
  const auto picture = [](int64_t nx, int64_t ny) {
    Volume v;
    v.nx = nx, v.ny = ny, v.nz = 1;
    v.intensity = Intensity::Picture8Bit;
    v.voxels.assign(static_cast<size_t>(nx * ny), 128.f);  // -472 HU: below the body level, air-dark
    return v;
  };
  Volume noise = picture(256, 256);
  std::mt19937 rng(7);
  for (float& v : noise.voxels) v = float(rng() % 256);
  for (const Volume& v : {noise, picture(256, 256), picture(1, 1), picture(2000, 3)}) {
    CAPTURE(v.nx);
    const LungSegmentation seg = ClassicalLungExtractor().extract(v);
    CHECK(seg.slice_has_lung[0] == 0);
    CHECK(seg.count(kRightLung) + seg.count(kLeftLung) == 0);
  }
  // The drawn chest still has its lungs (the rule is a fraction of the slice).
  CHECK(ClassicalLungExtractor().extract(chest_phantom().ct).slice_has_lung[0] == 1);
}

namespace {
// The overlaps of the classical extraction with an expert mask (label 1 = the
// patient's right lung, 2 = left, as in ours: checked by their positions).
std::pair<LabelOverlap, LabelOverlap> overlap_with_expert(const std::string& name) {
  const std::string dir = test::data_dir() + "/lung-masks-zenodo/";
  const Volume ct = read_nifti(dir + name + "_ct.nii.gz");
  const Volume expert = read_nifti(dir + name + "_lungs.nii.gz");
  const LungSegmentation seg = ClassicalLungExtractor().extract(ct);
  return {overlap(seg.labels, expert, kRightLung), overlap(seg.labels, expert, kLeftLung)};
}
}  // namespace

TEST_CASE("Dice against expert lung masks (Zenodo 3757476)") {
  // Floors are the measured values (docs/data.md) less about 0.005. The
  // Radiopaedia slice is an 8-bit picture in another window with thin crescents.
  struct Case {
    const char* name;
    double right_floor, left_floor;
  };
  LabelOverlap pooled_right, pooled_left;
  for (const Case c : {Case{"coronacases_001_slice_98", 0.956, 0.977}, Case{"coronacases_001_slice_110", 0.981, 0.982},
                       Case{"coronacases_001_slice_122", 0.987, 0.983},
                       Case{"radiopaedia_14_85914_0_slice_0", 0.950, 0.936}}) {
    const auto [right, left] = overlap_with_expert(c.name);
    MESSAGE(std::string(c.name) << ": right " << right.dice() << ", left " << left.dice());
    CHECK(right.dice() >= c.right_floor);
    CHECK(left.dice() >= c.left_floor);
    pooled_right += right, pooled_left += left;
  }
  // Known failure, kept visible: a slice below the lungs' bases where the expert
  // marks two slivers (311 pixels, 0.2 % of the body: below min_lung_area) and
  // the largest air is stomach gas. The gas-purity rule keeps the gas out (it was
  // taken as 2230 pixels of lung before); the slivers are not found.
  const auto [right, left] = overlap_with_expert("coronacases_008_slice_26");
  MESSAGE("coronacases_008_slice_26 (known failure): right " << right.dice() << ", left " << left.dice());
  CHECK(right.in_a + left.in_a <= 311);
  pooled_right += right, pooled_left += left;
  // Per lung over all five slices (every expert pixel counts once, as in a
  // volume's Dice): measured 0.978 right, 0.984 left; the aim is 0.95.
  MESSAGE("all five slices: right " << pooled_right.dice() << ", left " << pooled_left.dice());
  CHECK(pooled_right.dice() >= 0.973);
  CHECK(pooled_left.dice() >= 0.979);
}

TEST_CASE("healthy TCGA series: the trachea is not lung, also where it touches the right lung") {
  // Above the aortic arch (slices 38-47 of 48) the only air within 12 px of the
  // body's middle is the trachea's. In slices 39-43 it touches the right lung
  // through a wall thinner than a pixel (docs/data.md); it used to be taken as lung there.
  const Volume ct = read_dicom_series(test::data_dir() + "/ct-healthy-tcga");
  REQUIRE(ct.nz == 48);
  const LungSegmentation seg = ClassicalLungExtractor().extract(ct);
  int64_t trachea = 0, called_lung = 0;
  for (int64_t z = 38; z < 48; ++z) {
    double sum_x = 0;
    int64_t body = 0;
    for (int64_t y = 0; y < ct.ny; ++y)
      for (int64_t x = 0; x < ct.nx; ++x)
        if (ct.at(x, y, z) > -500) sum_x += double(x), ++body;
    REQUIRE(body > 0);
    const int64_t middle = int64_t(sum_x / double(body));
    for (int64_t y = 0; y < ct.ny; ++y)
      for (int64_t x = middle - 12; x <= middle + 12; ++x)
        if (ct.at(x, y, z) < -950) {
          // inside the body: soft tissue within 40 px above and below in this column
          // (not the air around the patient or between the back and the table)
          bool above = false, below = false;
          for (int64_t v = std::max<int64_t>(0, y - 40); v < y; ++v) above |= ct.at(x, v, z) > -500;
          for (int64_t v = y + 1; v < std::min<int64_t>(ct.ny, y + 41); ++v) below |= ct.at(x, v, z) > -500;
          if (!above || !below) continue;
          ++trachea;
          called_lung += seg.labels.at(x, y, z) != float(kNoLung);
        }
  }
  MESSAGE("trachea pixels " << trachea << ", called lung " << called_lung);
  REQUIRE(trachea > 500);
  CHECK(called_lung * 20 <= trachea);
}

TEST_CASE("whole COVID series: lungs in the chest slices, none in the abdomen and neck, plausible volumes") {
  const Volume ct = read_dicom_series(test::data_dir() + "/ct-covid-ricord");
  const LungSegmentation seg = ClassicalLungExtractor().extract(ct);
  REQUIRE(seg.slice_has_lung.size() == size_t(ct.nz));
  // The flagged slices form one run, with slices without lung at both ends.
  const auto first = std::find(seg.slice_has_lung.begin(), seg.slice_has_lung.end(), 1);
  const auto last = std::find(seg.slice_has_lung.rbegin(), seg.slice_has_lung.rend(), 1).base();
  CHECK(first != seg.slice_has_lung.begin());
  CHECK(last != seg.slice_has_lung.end());
  CHECK(std::find(first, last, 0) == last);
  const double voxel_ml = ct.spacing[0] * ct.spacing[1] * ct.spacing[2] / 1000.0;
  const double right_ml = double(seg.count(kRightLung)) * voxel_ml, left_ml = double(seg.count(kLeftLung)) * voxel_ml;
  MESSAGE("right lung " << right_ml << " ml, left lung " << left_ml << " ml");
  // Adult lungs hold 1 to 4 litres each; the right one is the larger.
  CHECK(right_ml > 1000);
  CHECK(right_ml < 4000);
  CHECK(left_ml > 1000);
  CHECK(left_ml < right_ml);
}

TEST_CASE("MedSeg training pictures: the extracted lungs hold most expert-marked lesion pixels") {
  // Dense consolidation against the chest wall is the classical method's blind
  // spot; this measures how much lesion it leaves outside (docs/data.md: 92.7 %).
  namespace fs = std::filesystem;
  const fs::path train = fs::path(test::data_dir()) / "medseg-semiseg" / "train";
  int64_t inside = 0, lesion = 0;
  for (const auto& e : fs::directory_iterator(train / "images")) {
    Volume picture = read_image(e.path().string());
    const Volume mask = read_image((train / "masks" / (e.path().stem().string() + ".png")).string());
    set_medseg_picture_orientation(picture);
    const LungSegmentation seg = ClassicalLungExtractor().extract(picture);
    CHECK_MESSAGE(seg.slice_has_lung[0] == 1, e.path());  // every picture is a chest (max_lung_fraction)
    for (int64_t p = 0; p < picture.voxel_count(); ++p)
      if (mask.voxels[p] != 0) ++lesion, inside += seg.labels.voxels[p] != 0;
  }
  REQUIRE(lesion > 0);
  // The datasets of eval and train (--lungs) take their lungs the same way.
  const Dataset set = load_dataset((train / "images").string(), (train / "masks").string(), {.lungs = true});
  for (const Sample& s : std::vector<Sample>(set.samples.begin(), set.samples.begin() + 4)) {
    Volume picture = s.image;
    set_medseg_picture_orientation(picture);
    const LungSegmentation seg = ClassicalLungExtractor().extract(picture);
    for (int64_t p = 0; p < picture.voxel_count(); ++p)
      REQUIRE_MESSAGE((s.lungs.voxels[p] != 0) == (seg.labels.voxels[p] != 0), s.name << " pixel " << p);
  }
  const double covered = double(inside) / double(lesion);
  MESSAGE("lesion pixels inside the extracted lungs: " << covered);
  CHECK(covered >= 0.92);
}
