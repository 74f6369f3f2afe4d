// Airways in the classical lung extraction (data/lung_passes.h): the airway
// tests, and the trachea followed through the slices where it touches a lung.
#include <algorithm>
#include <climits>
#include <cmath>
#include <vector>

#include "data/lung_passes.h"
#include "data/morphology.h"
#include "kernels/cpu/threads.h"

namespace covidrate::data::lung_passes {

// "Central": within the airway band around the body's middle.
bool is_central(double centroid, const SliceBody& body, const ClassicalLungOptions& o) {
  return std::abs(centroid - body.middle) < o.airway_band * body.width;
}
bool is_airway_sized(double a, const SliceBody& body, const ClassicalLungOptions& o) {
  return a >= o.min_part_area * double(body.area) && a < o.airway_max_area * double(body.area);
}

// Where the trachea or a main bronchus touches a lung through a wall thinner
// than a pixel, it is part of that lung's air piece and label_sides cannot drop
// it. Followed from the slice next to it, where it is a piece of its own: a
// pure-air core (below `lumen`) of a lung piece that is central, airway-sized
// and lies at least a quarter on the neighbour's airway is airway too. Only the
// neighbour airway's surroundings are searched. Slices are visited one after
// the other, down and then up, so that the airway is followed through any run
// of merged slices. That walk is serial, so it keeps each slice's airway extent
// up to date as it marks pixels instead of scanning whole slices for it (which
// made this pass 0.1-0.17 s of a 512 x 512 x 255 study's critical path).
void follow_airways(const float* domain, float lumen, int64_t nx, int64_t ny, int64_t nz,
                    const std::vector<SliceBody>& body, const ClassicalLungOptions& o, const SideAxis& axis,
                    const uint8_t* labels, uint8_t* airway) {
  const int64_t plane = nx * ny;
  struct Extent {  // the airway's pixels of a slice lie in columns [lx, hx], rows [ly, hy]; hx < 0: none
    int64_t lx = INT64_MAX, ly = INT64_MAX, hx = -1, hy = -1;
    void add(int64_t x, int64_t y) { lx = std::min(lx, x), hx = std::max(hx, x), ly = std::min(ly, y), hy = std::max(hy, y); }
  };
  std::vector<Extent> extent(nz);
  cpu::parallel_for(nz, 1, [&](int64_t z0, int64_t z1) {
    for (int64_t z = z0; z < z1; ++z) {
      const PixelBox b = bounding_box(airway + z * plane, nx, ny, 0, [](uint8_t a) { return a != 0; });
      if (!b.empty()) extent[z].add(b.x0, b.y0), extent[z].add(b.x0 + b.w - 1, b.y0 + b.h - 1);
    }
  });
  auto follow = [&](int64_t z, int64_t from) {
    const SliceBody& b = body[z];
    const Extent& e = extent[from];
    if (!b.area || e.hx < 0) return;
    const uint8_t* seed = airway + from * plane;
    // The seed's extent widened by the airway band, clamped to the slice.
    const int64_t margin = int64_t(std::ceil(o.airway_band * b.width));
    PixelBox box;
    box.x0 = std::max<int64_t>(0, e.lx - margin), box.y0 = std::max<int64_t>(0, e.ly - margin);
    box.w = std::min(nx, e.hx + margin + 1) - box.x0, box.h = std::min(ny, e.hy + margin + 1) - box.y0;
    const int64_t x0 = box.x0, y0 = box.y0, w = box.w, h = box.h;
    std::vector<uint8_t> core(w * h);
    const float* d = domain + z * plane;
    const uint8_t* l = labels + z * plane;
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const int64_t p = (y0 + y) * nx + x0 + x;
        core[y * w + x] = l[p] && d[p] < lumen;
      }
    const Components cores = components_2d(core.data(), w, h);
    std::vector<double> sum(cores.count + 1, 0.0);
    std::vector<int64_t> on_seed(cores.count + 1, 0);
    for (int64_t i = 0; i < w * h; ++i) {
      const int32_t k = cores.label[i];
      if (!k) continue;
      const int64_t p = (y0 + i / w) * nx + x0 + i % w;
      sum[k] += double(axis.along_x ? p % nx : p / nx);
      on_seed[k] += seed[p] != 0;
    }
    uint8_t* out = airway + z * plane;
    for (int64_t i = 0; i < w * h; ++i) {
      const int32_t k = cores.label[i];
      if (!k) continue;
      const double a = double(cores.size[k]);
      if (4 * on_seed[k] >= cores.size[k] && is_central(sum[k] / a, b, o) && is_airway_sized(a, b, o)) {
        out[(y0 + i / w) * nx + x0 + i % w] = 1;
        extent[z].add(x0 + i % w, y0 + i / w);
      }
    }
  };
  for (int64_t z = 1; z < nz; ++z) follow(z, z - 1);
  for (int64_t z = nz - 2; z >= 0; --z) follow(z, z + 1);
}

}  // namespace covidrate::data::lung_passes
