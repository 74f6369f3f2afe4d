#include "data/lungs.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <future>
#include <thread>

#include "data/input_domain.h"
#include "data/lung_passes.h"
#include "data/morphology.h"
#include "kernels/cpu/threads.h"
#include "nn/error.h"

namespace covidrate::data {

int64_t LungSegmentation::count(LungLabel which) const {
  return std::count(labels.voxels.begin(), labels.voxels.end(), static_cast<uint8_t>(which));
}

namespace {

using namespace lung_passes;

SideAxis side_axis(const Volume& v) {
  const bool along_x = std::abs(v.row_dir[0]) >= std::abs(v.col_dir[0]);
  const double toward_left = along_x ? v.row_dir[0] : v.col_dir[0];
  return {along_x, toward_left >= 0};
}

// Runs fn(z) for z in [0, n) on `threads` threads (slices are independent).
template <typename Fn>
void for_each_slice(int64_t n, int threads, Fn&& fn) {
  if (threads <= 0) threads = cpu::num_threads();
  threads = int(std::min<int64_t>(threads, n));
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (int64_t z; (z = next++) < n;) fn(z);
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

// Body mask (largest bright component, holes filled) and the air inside it.
SliceBody body_and_air(const float* domain, int64_t nx, int64_t ny, const ClassicalLungOptions& o,
                       const SideAxis& axis, uint8_t* air) {
  const int64_t n = nx * ny;
  const float body_level = hu_to_domain(o.body_min_hu), air_level = hu_to_domain(o.air_max_hu);
  std::vector<uint8_t> body(n);
  for (int64_t p = 0; p < n; ++p) body[p] = domain[p] > body_level;
  const Components parts = components_2d(body.data(), nx, ny);
  const int32_t keep = parts.largest();
  for (int64_t p = 0; p < n; ++p) body[p] = keep && parts.label[p] == keep;
  // Dark regions open to the image border are the air around the patient,
  // unless the picture was cropped through the chest (the MedSeg slices): then
  // the body covers much of the border and lungs reach it too. Intensity cannot
  // tell a cut lung from air there (a hyperinflated lung is as dark as air in
  // those pictures), size can: what air the crop left is a sliver in a corner.
  int64_t border_body = 0;
  for (int64_t x = 0; x < nx; ++x) border_body += body[x] + body[(ny - 1) * nx + x];
  for (int64_t y = 0; y < ny; ++y) border_body += body[y * nx] + body[y * nx + nx - 1];
  if (double(border_body) > o.cropped_border_fraction * double(2 * (nx + ny))) {
    std::vector<uint8_t> dark_pixels(n);
    for (int64_t p = 0; p < n; ++p) dark_pixels[p] = !body[p];
    const Components dark = components_2d(dark_pixels.data(), nx, ny);
    std::vector<uint8_t> open(dark.count + 1, 0);
    for (int64_t x = 0; x < nx; ++x) open[dark.label[x]] = open[dark.label[(ny - 1) * nx + x]] = 1;
    for (int64_t y = 0; y < ny; ++y) open[dark.label[y * nx]] = open[dark.label[y * nx + nx - 1]] = 1;
    const double min_cut_lung = o.min_cut_lung_area * double(n);
    for (int64_t p = 0; p < n; ++p) {
      const int32_t k = dark.label[p];
      if (k && open[k] && double(dark.size[k]) > min_cut_lung) body[p] = 1;
    }
  }
  fill_holes_2d(body.data(), nx, ny);

  SliceBody s;
  double sum = 0, sum_x = 0, sum_y = 0;
  int64_t lo = INT64_MAX, hi = -1;
  for (int64_t p = 0; p < n; ++p) {
    air[p] = body[p] && domain[p] < air_level;
    if (!body[p]) continue;
    const int64_t c = axis.along_x ? p % nx : p / nx;
    ++s.area;
    sum += double(c);
    sum_x += double(p % nx);
    sum_y += double(p / nx);
    lo = std::min(lo, c);
    hi = std::max(hi, c);
  }
  if (s.area) {
    s.middle = sum / double(s.area), s.width = double(hi - lo + 1);
    s.cx = sum_x / double(s.area), s.cy = sum_y / double(s.area);
  }
  return s;
}

// Levels in the input domain for the purity rules; -1 turns a rule off (they
// need HU: a windowed picture may show aerated lung as dark as air).
struct PureAirLevels {
  float gas = -1;    // one slice alone: air pieces mostly below this are gas, not lung
  float lumen = -1;  // the airways' lumen
};

// Second pass on one slice, first half: drop noise, airways and (one slice
// alone) pure gas, and label each remaining air piece with its side, splitting
// pieces that hold both lungs. Marks the dropped airway pieces in `airway`.
void label_sides(const uint8_t* air, const float* domain, PureAirLevels levels, int64_t nx, int64_t ny,
                 const SliceBody& body, const ClassicalLungOptions& o, const SideAxis& axis, uint8_t* labels,
                 uint8_t* airway) {
  const int64_t n = nx * ny;
  std::fill(labels, labels + n, uint8_t(0));
  std::fill(airway, airway + n, uint8_t(0));
  if (!body.area) return;
  const Components c = components_2d(air, nx, ny);
  std::vector<double> sum(c.count + 1, 0.0), low_side(c.count + 1, 0.0);
  std::vector<int64_t> gas(c.count + 1, 0);
  for (int64_t p = 0; p < n; ++p) {
    const int32_t k = c.label[p];
    if (!k) continue;
    const double coord = double(axis.along_x ? p % nx : p / nx);
    sum[k] += coord;
    low_side[k] += coord < body.middle;
    gas[k] += domain[p] < levels.gas;
  }
  const double area = double(body.area);
  std::vector<uint8_t> side_label(c.count + 1, 0);  // 0 drop, 1/2 a side, 3 straddles the midline
  std::vector<uint8_t> airway_piece(c.count + 1, 0);
  for (int32_t k = 1; k <= c.count; ++k) {
    const double a = double(c.size[k]), centroid = sum[k] / a;
    if (a < o.min_part_area * area) continue;
    if (is_central(centroid, body, o) && is_airway_sized(a, body, o)) {
      airway_piece[k] = 1;
      continue;
    }
    if (double(gas[k]) > o.max_gas_fraction * a) continue;
    // A big piece with at least a tenth of itself on each side of the midline
    // is both lungs joined.
    const double low_fraction = low_side[k] / a;
    if (low_fraction > 0.1 && low_fraction < 0.9 && a > 4 * o.airway_max_area * area) {
      side_label[k] = 3;
      continue;
    }
    side_label[k] = (centroid < body.middle) == axis.right_at_low_index ? kRightLung : kLeftLung;
  }
  std::vector<uint8_t> piece(n);
  for (int32_t k = 1; k <= c.count; ++k) {
    if (side_label[k] != 3) continue;
    for (int64_t p = 0; p < n; ++p) piece[p] = c.label[p] == k;
    split_merged(piece, nx, ny, axis, body.middle, labels);
  }
  for (int64_t p = 0; p < n; ++p) {
    const int32_t k = c.label[p];
    if (k && side_label[k] && side_label[k] != 3) labels[p] = side_label[k];
    airway[p] = airway_piece[k];
  }
}

// Second half: fill each lung's holes (vessels, nodules), close its outline and
// take back its dents on the chest-wall side, so that dense lesions against the
// pleura stay inside the lung. Last, the airways and their wall are cleared
// again: the closing fills the notch the trachea makes in a lung's medial outline.
void finish_lungs(int64_t nx, int64_t ny, const SliceBody& body, const ClassicalLungOptions& o, const SideAxis& axis,
                  uint8_t* labels, const uint8_t* airway) {
  if (!body.area) return;
  const float radius = float(o.closing_radius * body.width);
  const int64_t max_hole = int64_t(o.max_hole_area * double(body.area));
  for (uint8_t side : {kRightLung, kLeftLung}) {
    const LungPatch patch = close_and_fill(labels, side, nx, ny, radius, max_hole);
    for (int64_t y = 0; y < patch.h; ++y)
      for (int64_t x = 0; x < patch.w; ++x) {
        uint8_t& l = labels[(patch.y0 + y) * nx + patch.x0 + x];
        if (patch.mask[y * patch.w + x] && l == 0) l = side;  // never take a pixel from the other lung
      }
  }
  for (uint8_t side : {kRightLung, kLeftLung}) add_pleural_dents(side, nx, ny, body, o, axis, labels);

  // The dilation on the airways' box only (a full-slice one cost as much as
  // all the closings): the disk reaches no farther than its radius.
  const float wall = float(o.airway_wall * body.width);
  const PixelBox box =
      bounding_box(airway, nx, ny, int64_t(std::ceil(wall)) + 1, [](uint8_t a) { return a != 0; });
  if (box.empty()) return;
  std::vector<uint8_t> patch(box.w * box.h);
  for (int64_t y = 0; y < box.h; ++y)
    for (int64_t x = 0; x < box.w; ++x) patch[y * box.w + x] = airway[(box.y0 + y) * nx + box.x0 + x];
  dilate_disk(patch.data(), box.w, box.h, wall);
  for (int64_t y = 0; y < box.h; ++y)
    for (int64_t x = 0; x < box.w; ++x)
      if (patch[y * box.w + x]) labels[(box.y0 + y) * nx + box.x0 + x] = 0;
}

}  // namespace

LungSegmentation ClassicalLungExtractor::extract(const Volume& ct) const {
  CR_CHECK(ct.nx > 0 && ct.ny > 0 && ct.nz > 0 && ct.voxel_count() == int64_t(ct.voxels.size()),
           "lung extraction: " << ct.source << " is empty or its size does not match its voxels");
  return extract(ct, to_input_domain(ct));
}

LungSegmentation ClassicalLungExtractor::extract(const Volume& ct, const Volume& domain) const {
  CR_CHECK(ct.nx > 0 && ct.ny > 0 && ct.nz > 0 && ct.voxel_count() == int64_t(ct.voxels.size()),
           "lung extraction: " << ct.source << " is empty or its size does not match its voxels");
  CR_CHECK(domain.nx == ct.nx && domain.ny == ct.ny && domain.voxels.size() == ct.voxels.size() &&
               domain.intensity == Intensity::Picture8Bit,
           "lung extraction: the input domain given is not that of " << ct.source);
  // Every step reads axial slices (the body's outline, the sides, the airways
  // between the lungs), and so does the network after it. A sagittal or coronal
  // stack read as axial finds "no lung" or the wrong lungs and reads as healthy.
  const double across[3] = {std::abs(ct.slice_dir[0]), std::abs(ct.slice_dir[1]), std::abs(ct.slice_dir[2])};
  CR_CHECK(across[2] >= across[0] && across[2] >= across[1],
           ct.source << ": its slices are " << (across[0] >= across[1] ? "sagittal" : "coronal")
                     << " (slice direction " << ct.slice_dir[0] + 0.0 << ", " << ct.slice_dir[1] + 0.0 << ", "
                     << ct.slice_dir[2] + 0.0
                     << " in LPS); lung extraction and the network work on axial slices (segment and lungs "
                        "permute a sagittal or coronal stack to axial themselves: data/reorient.h)");
  const ClassicalLungOptions& o = options_;
  const SideAxis axis = side_axis(ct);
  const int64_t nx = ct.nx, ny = ct.ny, nz = ct.nz, plane = nx * ny;

  UninitializedVector<uint8_t> air(plane * nz);  // body_and_air writes every value
  std::vector<SliceBody> body(nz);
  for_each_slice(nz, o.threads, [&](int64_t z) {
    body[z] = body_and_air(domain.slice(z), nx, ny, o, axis, air.data() + z * plane);
  });

  // In a volume, the lungs and airways form the big air components; gas in the
  // bowel or stomach forms small separate ones.
  if (nz > 1) {
    const Components c = components_3d(air.data(), nx, ny, nz);
    const int32_t big = c.largest();
    if (big) {
      const int64_t floor = int64_t(o.min_part_volume * double(c.size[big]));
      for_each_slice(nz, o.threads, [&](int64_t z) {
        for (int64_t p = z * plane; p < (z + 1) * plane; ++p)
          if (air[p] && c.size[c.label[p]] < floor) air[p] = 0;
      });
    }
  }

  // The result's float label volume (268 MB for 512 x 512 x 255) is allocated
  // and zero-filled on a thread of its own while the slices are labelled: a
  // serial pass of page faults that took 0.13-0.18 s on the critical path.
  // Not before this point, where the 3-D labels (as big) are freed, so the
  // peak memory stays what it was. (A std::async future waits for its task
  // when destroyed, so an exception below leaves no thread behind.)
  std::future<LabelVolume> grid =
      std::async(std::launch::async, [&] { return same_grid<uint8_t>(ct, Intensity::Label); });
  LungSegmentation seg;
  seg.slice_has_lung.assign(nz, 0);
  // Without the 3-D rule (one slice), gas is told from lung by its purity; in a
  // volume, airways merged with a lung are told by theirs.
  PureAirLevels levels;
  if (ct.intensity == Intensity::HounsfieldUnits) {
    levels.lumen = hu_to_domain(o.airway_max_hu);
    if (nz == 1) levels.gas = hu_to_domain(o.gas_max_hu);
  }
  UninitializedVector<uint8_t> labels(plane * nz), airway(plane * nz);  // label_sides writes every value
  for_each_slice(nz, o.threads, [&](int64_t z) {
    label_sides(air.data() + z * plane, domain.slice(z), levels, nx, ny, body[z], o, axis, labels.data() + z * plane,
                airway.data() + z * plane);
  });
  if (nz > 1 && levels.lumen >= 0)
    follow_airways(domain.voxels.data(), levels.lumen, nx, ny, nz, body, o, axis, labels.data(), airway.data());
  for_each_slice(nz, o.threads, [&](int64_t z) {
    uint8_t* out = labels.data() + z * plane;
    finish_lungs(nx, ny, body[z], o, axis, out, airway.data() + z * plane);
    const int64_t lung = std::count_if(out, out + plane, [](uint8_t v) { return v != 0; });
    if (double(lung) > o.max_lung_fraction * double(plane)) {  // not a chest: no lung at all
      std::fill(out, out + plane, uint8_t(0));
      return;
    }
    seg.slice_has_lung[z] = body[z].area && double(lung) >= o.min_lung_area * double(body[z].area);
  });
  seg.labels = grid.get();
  seg.labels.description = "lungs (" + name() + "): 0 none, 1 right, 2 left";
  for_each_slice(nz, o.threads, [&](int64_t z) {
    std::copy(labels.begin() + z * plane, labels.begin() + (z + 1) * plane, seg.labels.slice(z));
  });
  return seg;
}

}  // namespace covidrate::data
