// Outline passes of the classical lung extraction (data/lung_passes.h): lungs
// joined across the midline split apart, each lung's outline closed and its
// holes filled, and dense lung against the chest wall taken back.
#include <algorithm>
#include <cmath>
#include <vector>

#include "data/lung_passes.h"
#include "data/morphology.h"

namespace covidrate::data::lung_passes {

// Splits one component that straddles the midline into two: erode (through the
// distance transform) until it falls apart into a part on each side, then give
// every pixel to the nearer core along paths inside the component. Falls back
// to cutting at the midline when it never falls apart (fused lungs).
void split_merged(const std::vector<uint8_t>& piece, int64_t nx, int64_t ny, const SideAxis& axis, double middle,
                  uint8_t* out_labels) {
  const int64_t n = nx * ny;
  auto coord = [&](int64_t p) { return double(axis.along_x ? p % nx : p / nx); };
  auto label_of_side = [&](double c) {
    const bool low = c < middle;
    return uint8_t(low == axis.right_at_low_index ? kRightLung : kLeftLung);
  };
  const auto dist = squared_distance_to_background(piece.data(), nx, ny, true);
  const float deepest = *std::max_element(dist.begin(), dist.end());
  std::vector<uint8_t> core(n);
  std::vector<uint8_t> seeds(n, 0);
  bool split = false;
  for (float r = 1; r * r < deepest && !split; r += 1) {
    for (int64_t p = 0; p < n; ++p) core[p] = dist[p] > r * r;
    const Components c = components_2d(core.data(), nx, ny);
    if (c.count < 2) continue;
    // The two largest cores, if they lie on opposite sides, are the two lungs.
    std::vector<int32_t> order(c.count);
    for (int32_t k = 0; k < c.count; ++k) order[k] = k + 1;
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return c.size[a] > c.size[b]; });
    if (c.size[order[1]] * 20 < c.size[order[0]]) continue;
    std::vector<double> sum(c.count + 1, 0.0);
    for (int64_t p = 0; p < n; ++p)
      if (c.label[p]) sum[c.label[p]] += coord(p);
    const double c0 = sum[order[0]] / double(c.size[order[0]]), c1 = sum[order[1]] / double(c.size[order[1]]);
    if ((c0 < middle) == (c1 < middle)) continue;
    for (int64_t p = 0; p < n; ++p)
      if (c.label[p] == order[0] || c.label[p] == order[1])
        seeds[p] = label_of_side(c.label[p] == order[0] ? c0 : c1);
    split = true;
  }
  if (!split) {
    for (int64_t p = 0; p < n; ++p)
      if (piece[p]) out_labels[p] = label_of_side(coord(p));
    return;
  }
  // Breadth-first growth of both seeds at once inside the piece.
  std::vector<int64_t> frontier, next;
  for (int64_t p = 0; p < n; ++p)
    if (seeds[p]) frontier.push_back(p);
  while (!frontier.empty()) {
    next.clear();
    for (int64_t p : frontier) {
      const int64_t x = p % nx, y = p / nx;
      const int64_t nb[4] = {x > 0 ? p - 1 : -1, x + 1 < nx ? p + 1 : -1, y > 0 ? p - nx : -1,
                             y + 1 < ny ? p + nx : -1};
      for (int64_t q : nb)
        if (q >= 0 && piece[q] && !seeds[q]) seeds[q] = seeds[p], next.push_back(q);
    }
    frontier.swap(next);
  }
  for (int64_t p = 0; p < n; ++p)
    if (piece[p]) out_labels[p] = seeds[p] ? seeds[p] : label_of_side(coord(p));
}

// Closes one lung's outline and fills its small holes on its patch (the same
// result as on the whole slice, at a fraction of the cost).
LungPatch close_and_fill(const uint8_t* labels, uint8_t side, int64_t nx, int64_t ny, float radius,
                         int64_t max_hole) {
  const PixelBox box =
      bounding_box(labels, nx, ny, int64_t(std::ceil(radius)) + 2, [side](uint8_t l) { return l == side; });
  LungPatch patch;
  if (box.empty()) return patch;
  patch.x0 = box.x0, patch.y0 = box.y0, patch.w = box.w, patch.h = box.h;
  patch.mask.resize(patch.w * patch.h);
  for (int64_t y = 0; y < patch.h; ++y)
    for (int64_t x = 0; x < patch.w; ++x)
      patch.mask[y * patch.w + x] = labels[(patch.y0 + y) * nx + patch.x0 + x] == side;
  close_disk(patch.mask.data(), patch.w, patch.h, radius);
  fill_holes_2d(patch.mask.data(), patch.w, patch.h, max_hole);
  return patch;
}

namespace {

constexpr int kWallSectors = 360;

// The sector of the direction (dx, dy) from the body's centre: a pseudo-angle in
// [0, 4), monotonic in the true angle, without atan2, cut into kWallSectors.
int wall_sector(double dx, double dy) {
  const double l1 = std::abs(dx) + std::abs(dy);
  if (l1 == 0) return 0;
  double a = dy / l1;
  if (dx < 0) a = 2 - a;
  else if (dy < 0) a = 4 + a;
  return std::min(kWallSectors - 1, int(a / 4 * kWallSectors));
}

}  // namespace

// Dense lung against the chest wall (consolidation wider than the closing disk)
// is above the air threshold and leaves a dent in the lung's outer outline. It
// is taken back from the convex hull of each lung piece, but only where it sits
// on the chest-wall side: farther from the body's centre than every pixel of the
// lung in its direction (one of kWallSectors sectors around the centre, 0.6 to
// 1.3 degrees wide: finer ones let rays slip past a crescent's tips). What a
// lung wraps around lies nearer the centre than the lung and stays out: the
// liver's or spleen's dome inside a basal crescent, the heart and hilum in the
// medial concavity. Soft tissue in the band around the midline is sternum, spine
// or mediastinum, so nothing is added there, and dents smaller than
// min_dent_area are outline jitter that the closing has already dealt with.
void add_pleural_dents(uint8_t side, int64_t nx, int64_t ny, const SliceBody& body, const ClassicalLungOptions& o,
                       const SideAxis& axis, uint8_t* labels) {
  // Hulls and dents lie inside the lung's bounding box: work there only, with
  // each pixel's sector and squared radius from the body's centre worked out once.
  const PixelBox box = bounding_box(labels, nx, ny, 0, [side](uint8_t l) { return l == side; });
  if (box.empty()) return;
  const int64_t x0 = box.x0, y0 = box.y0, w = box.w, h = box.h, n = w * h;
  std::vector<uint8_t> lung(n), occupied(n);  // this lung; either lung
  std::vector<int16_t> sector(n);
  std::vector<double> radius2(n);
  std::vector<double> reach(kWallSectors, -1.0);  // the lung's farthest squared radius per sector
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      const int64_t i = y * w + x;
      const uint8_t l = labels[(y0 + y) * nx + x0 + x];
      const double dx = double(x0 + x) - body.cx, dy = double(y0 + y) - body.cy;
      sector[i] = static_cast<int16_t>(wall_sector(dx, dy));
      radius2[i] = dx * dx + dy * dy;
      lung[i] = l == side;
      occupied[i] = l != 0;
      if (lung[i]) reach[sector[i]] = std::max(reach[sector[i]], radius2[i]);
    }
  // Hulls of separate pieces: one hull over all would bridge organ between a
  // lung's pieces, such as the liver between the anterior and posterior recesses.
  const Components pieces = components_2d(lung.data(), w, h);
  std::vector<uint8_t> dent(n, 0), piece(n), hull(n);
  const double band = o.mediastinum_band * body.width;
  for (int32_t k = 1; k <= pieces.count; ++k) {
    for (int64_t i = 0; i < n; ++i) piece[i] = pieces.label[i] == k;
    convex_hull_2d(piece.data(), w, h, hull.data());
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const int64_t i = y * w + x;
        if (!hull[i] || occupied[i]) continue;
        const double c = double(axis.along_x ? x0 + x : y0 + y);
        const double lung_reach = reach[sector[i]];
        dent[i] = lung_reach >= 0 && radius2[i] > lung_reach && std::abs(c - body.middle) >= band;
      }
  }
  const Components dents = components_2d(dent.data(), w, h);
  const double min_dent = o.min_dent_area * double(body.area);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      const int32_t d = dents.label[y * w + x];
      if (d && double(dents.size[d]) >= min_dent) labels[(y0 + y) * nx + x0 + x] = side;
    }
}

}  // namespace covidrate::data::lung_passes
