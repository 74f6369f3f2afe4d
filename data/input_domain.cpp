#include "data/input_domain.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/threads.h"
#include "nn/error.h"

namespace covidrate::data {

float hu_to_domain(float hu, LungWindow w) {
  const float v = 255.f * (hu - w.low_hu) / (w.high_hu - w.low_hu);
  return std::clamp(v, 0.f, 255.f);
}

float domain_to_hu(float value, LungWindow w) {
  return w.low_hu + std::clamp(value, 0.f, 255.f) / 255.f * (w.high_hu - w.low_hu);
}

Volume to_input_domain(const Volume& v, LungWindow w) {
  CR_CHECK(w.high_hu > w.low_hu, "to_input_domain: window [" << w.low_hu << ", " << w.high_hu << "] is empty");
  const std::string name = v.source.empty() ? "the volume" : v.source;
  CR_CHECK(v.intensity == Intensity::HounsfieldUnits || v.intensity == Intensity::Picture8Bit,
           name << " holds labels or non-CT scanner units, not a CT image");
  CR_CHECK(v.volumes_in_file == 1, name << " holds " << v.volumes_in_file
                                        << " volumes (4-D); covidrate reads one 3-D CT: extract the one to use first "
                                           "(for example with fslroi or nibabel)");
  Volume out = same_grid(v, Intensity::Picture8Bit);
  const bool hu = v.intensity == Intensity::HounsfieldUnits;
  // Elementwise over up to hundreds of megabytes: on the CPU pool. NaN and
  // infinities (a float NIfTI can hold them) are counted: clamped, they would
  // pass for air or bone and change the lungs and the figures without a word.
  std::atomic<int64_t> not_finite{0};
  cpu::parallel_for(static_cast<int64_t>(v.voxels.size()), int64_t{1} << 18, [&](int64_t begin, int64_t end) {
    int64_t bad = 0;
    for (int64_t i = begin; i < end; ++i) {
      bad += !std::isfinite(v.voxels[i]);
      out.voxels[i] = hu ? hu_to_domain(v.voxels[i], w) : std::clamp(v.voxels[i], 0.f, 255.f);
    }
    not_finite += bad;
  });
  CR_CHECK(not_finite == 0, name << ": " << not_finite.load() << " of " << v.voxels.size()
                                 << " voxels are NaN or infinite; a CT image holds finite values");
  return out;
}

void standardize(float* values, int64_t n) {
  if (n <= 0) return;
  double sum = 0, sum2 = 0;
  for (int64_t i = 0; i < n; ++i) sum += values[i];
  const double mean = sum / double(n);
  for (int64_t i = 0; i < n; ++i) sum2 += (values[i] - mean) * (values[i] - mean);
  const double sd = std::max(std::sqrt(sum2 / double(n)), 1e-6);
  for (int64_t i = 0; i < n; ++i) values[i] = float((values[i] - mean) / sd);
}

DomainStats domain_stats(const float* values, const uint8_t* mask, int64_t n) {
  std::vector<float> picked;
  for (int64_t i = 0; i < n; ++i)
    if (!mask || mask[i]) picked.push_back(values[i]);
  DomainStats s;
  s.count = int64_t(picked.size());
  if (picked.empty()) return s;
  double sum = 0, sum2 = 0;
  for (float x : picked) sum += x;
  s.mean = sum / double(s.count);
  for (float x : picked) sum2 += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(sum2 / double(s.count));
  std::sort(picked.begin(), picked.end());
  auto pct = [&](double p) { return double(picked[size_t(p * double(picked.size() - 1) + 0.5)]); };
  s.p05 = pct(0.05), s.p25 = pct(0.25), s.p50 = pct(0.50), s.p75 = pct(0.75), s.p95 = pct(0.95);
  return s;
}

void set_medseg_picture_orientation(VolumeGrid& picture) {
  // x (along a row) runs from anterior to posterior: +y in LPS.
  // y (down the columns) runs from patient right to patient left: +x in LPS.
  picture.row_dir = {0, 1, 0};
  picture.col_dir = {1, 0, 0};
  picture.slice_dir = {0, 0, 1};
}

Volume medseg_layout(const Volume& radiological) {
  CR_CHECK(radiological.nz == 1, "medseg_layout: expects one slice, got " << radiological.nz);
  Volume out = radiological;
  out.nx = radiological.ny;
  out.ny = radiological.nx;
  out.spacing = {radiological.spacing[1], radiological.spacing[0], radiological.spacing[2]};
  for (int64_t y = 0; y < out.ny; ++y)
    for (int64_t x = 0; x < out.nx; ++x) out.voxels[y * out.nx + x] = radiological.voxels[x * radiological.nx + y];
  set_medseg_picture_orientation(out);
  return out;
}

template <class T> BasicVolume<T> radiological_slice(const BasicVolume<T>& v, int64_t z) {
  CR_CHECK(z >= 0 && z < v.nz, "radiological_slice: slice " << z << " outside 0.." << v.nz - 1);
  // Which input axis runs along the patient's left-right axis (LPS x)?
  const bool transposed = std::abs(v.col_dir[0]) > std::abs(v.row_dir[0]);
  const bool flip_x = transposed ? v.col_dir[0] < 0 : v.row_dir[0] < 0;
  const bool flip_y = transposed ? v.row_dir[1] < 0 : v.col_dir[1] < 0;
  BasicVolume<T> out;
  out.nx = transposed ? v.ny : v.nx;
  out.ny = transposed ? v.nx : v.ny;
  out.nz = 1;
  out.spacing = {transposed ? v.spacing[1] : v.spacing[0], transposed ? v.spacing[0] : v.spacing[1], v.spacing[2]};
  out.intensity = v.intensity;
  out.source = v.source;
  out.description = v.description;
  out.voxels.resize(out.nx * out.ny);
  const T* in = v.slice(z);
  for (int64_t y = 0; y < out.ny; ++y)
    for (int64_t x = 0; x < out.nx; ++x) {
      const int64_t a = flip_x ? out.nx - 1 - x : x;  // index along the left-right axis
      const int64_t b = flip_y ? out.ny - 1 - y : y;  // index along the anterior-posterior axis
      const int64_t i = transposed ? b : a, j = transposed ? a : b;
      out.voxels[y * out.nx + x] = in[j * v.nx + i];
    }
  return out;
}
template Volume radiological_slice(const Volume&, int64_t);
template LabelVolume radiological_slice(const LabelVolume&, int64_t);

}  // namespace covidrate::data
