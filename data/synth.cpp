#include "data/synth.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "data/image2d.h"
#include "data/input_domain.h"
#include "data/lungs.h"
#include "data/read_any.h"
#include "nn/error.h"

namespace covidrate::data {

Box nonzero_box(const Volume& mask) {
  Box b{mask.nx, mask.ny, 0, 0};
  for (int64_t y = 0; y < mask.ny; ++y)
    for (int64_t x = 0; x < mask.nx; ++x)
      if (mask.voxels[y * mask.nx + x] != 0) {
        b.x0 = std::min(b.x0, x), b.x1 = std::max(b.x1, x + 1);
        b.y0 = std::min(b.y0, y), b.y1 = std::max(b.y1, y + 1);
      }
  return b.empty() ? Box{} : b;
}

Volume crop(const Volume& v, Box box) {
  CR_CHECK(v.nz == 1, "crop: expects one slice, got " << v.nz);
  box.x0 = std::max<int64_t>(box.x0, 0), box.y0 = std::max<int64_t>(box.y0, 0);
  box.x1 = std::min(box.x1, v.nx), box.y1 = std::min(box.y1, v.ny);
  CR_CHECK(!box.empty(), "crop: the box lies outside the " << v.nx << "x" << v.ny << " image");
  Volume out = v;
  out.nx = box.x1 - box.x0;
  out.ny = box.y1 - box.y0;
  out.voxels.resize(out.nx * out.ny);
  for (int64_t y = 0; y < out.ny; ++y)
    std::copy_n(v.voxels.data() + (box.y0 + y) * v.nx + box.x0, out.nx, out.voxels.data() + y * out.nx);
  return out;
}

namespace {

float bilinear(const Volume& v, double x, double y) {
  x = std::clamp(x, 0.0, double(v.nx - 1));
  y = std::clamp(y, 0.0, double(v.ny - 1));
  const int64_t x0 = int64_t(x), y0 = int64_t(y);
  const int64_t x1 = std::min(x0 + 1, v.nx - 1), y1 = std::min(y0 + 1, v.ny - 1);
  const double fx = x - double(x0), fy = y - double(y0);
  auto at = [&](int64_t xx, int64_t yy) { return double(v.voxels[yy * v.nx + xx]); };
  return float((1 - fy) * ((1 - fx) * at(x0, y0) + fx * at(x1, y0)) + fy * ((1 - fx) * at(x0, y1) + fx * at(x1, y1)));
}

void check_slice(const Volume& v, const Volume& like, const char* what) {
  CR_CHECK(v.nz == 1 && v.nx == like.nx && v.ny == like.ny,
           "insert_lesions: " << what << " is " << v.nx << "x" << v.ny << "x" << v.nz << ", expected " << like.nx
                              << "x" << like.ny << "x1");
}

}  // namespace

std::optional<SyntheticPair> insert_lesions(const AnnotatedSlice& infected, const AnnotatedSlice& healthy,
                                            double min_infection_rate) {
  check_slice(infected.lungs, infected.image, "the infected slice's lung mask");
  check_slice(infected.lesion, infected.image, "the infected slice's lesion mask");
  check_slice(healthy.lungs, healthy.image, "the healthy slice's lung mask");
  // The infected box covers lesions too: a consolidation against the pleura
  // may lie outside what a lung extractor calls lung.
  Volume infected_extent = infected.lungs;
  for (int64_t p = 0; p < infected_extent.voxel_count(); ++p)
    if (infected.lesion.voxels[p] != 0) infected_extent.voxels[p] = 1;
  const Box from = nonzero_box(infected_extent), to = nonzero_box(healthy.lungs);
  if (from.empty() || to.empty()) return std::nullopt;

  SyntheticPair out{healthy.image, healthy.image, 0.0};
  std::fill(out.mask.voxels.begin(), out.mask.voxels.end(), 0.f);
  out.mask.intensity = Intensity::Label;
  const double sx = double(from.x1 - from.x0) / double(to.x1 - to.x0);
  const double sy = double(from.y1 - from.y0) / double(to.y1 - to.y0);
  int64_t lesion = 0, lung = 0;
  for (int64_t y = 0; y < healthy.image.ny; ++y)
    for (int64_t x = 0; x < healthy.image.nx; ++x) {
      const int64_t p = y * healthy.image.nx + x;
      if (healthy.lungs.voxels[p] == 0) continue;
      ++lung;
      // Pixel centres map onto pixel centres.
      const double u = double(from.x0) + (double(x - to.x0) + 0.5) * sx - 0.5;
      const double v = double(from.y0) + (double(y - to.y0) + 0.5) * sy - 0.5;
      const int64_t ui = std::lround(u), vi = std::lround(v);
      if (ui < 0 || vi < 0 || ui >= infected.image.nx || vi >= infected.image.ny) continue;
      if (infected.lesion.voxels[vi * infected.image.nx + ui] == 0) continue;
      out.mask.voxels[p] = 1;
      out.image.voxels[p] = bilinear(infected.image, u, v);
      ++lesion;
    }
  out.infection_rate = lung ? double(lesion) / double(lung) : 0.0;
  if (out.infection_rate <= min_infection_rate) return std::nullopt;
  return out;
}

std::vector<AnnotatedSlice> load_infected_slices(const std::string& train_dir, int limit,
                                                 const std::vector<std::string>& only) {
  namespace fs = std::filesystem;
  const fs::path images = fs::path(train_dir) / "images", masks = fs::path(train_dir) / "masks";
  CR_CHECK(fs::is_directory(images) && fs::is_directory(masks),
           "synth: " << train_dir << " has no images/ and masks/ folders (the MedSeg layout)");
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(images)) {
    const std::string ext = e.path().extension().string();
    if (ext == ".jpg" || ext == ".jpeg" || ext == ".png") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  if (!only.empty()) {
    std::set<std::string> wanted(only.begin(), only.end()), present;
    std::vector<fs::path> kept;
    for (const fs::path& f : files)
      if (wanted.count(f.stem().string())) kept.push_back(f), present.insert(f.stem().string());
    for (const std::string& name : wanted)
      CR_CHECK(present.count(name), "synth: no picture named '" << name << "' in " << images.string());
    files = std::move(kept);
  }
  if (limit > 0 && int64_t(files.size()) > limit) files.resize(limit);
  CR_CHECK(!files.empty(), "synth: no .jpg or .png pictures in " << images.string());
  const ClassicalLungExtractor extractor;
  std::vector<AnnotatedSlice> out;
  for (const fs::path& f : files) {
    const fs::path mask_path = masks / (f.stem().string() + ".png");
    CR_CHECK(fs::exists(mask_path), "synth: " << f.string() << " has no mask " << mask_path.string());
    Volume picture = read_image(f.string()), mask = read_image(mask_path.string());
    CR_CHECK(picture.nx == mask.nx && picture.ny == mask.ny,
             "synth: " << mask_path.string() << " is " << mask.nx << "x" << mask.ny << " but its image is "
                       << picture.nx << "x" << picture.ny);
    set_medseg_picture_orientation(picture);
    set_medseg_picture_orientation(mask);
    AnnotatedSlice s;
    s.name = f.stem().string();
    s.image = to_input_domain(radiological_slice(picture, 0));
    s.lesion = radiological_slice(mask, 0);
    for (float& v : s.lesion.voxels) v = v > 0 ? 1.f : 0.f;
    s.lesion.intensity = Intensity::Label;
    s.lungs = to_float(extractor.extract(s.image).labels);
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<AnnotatedSlice> load_healthy_slices(const std::string& series, double min_lung_fraction) {
  const Volume ct = read_any(series);
  CR_CHECK(ct.intensity == Intensity::HounsfieldUnits, "synth: " << series << " is not a CT in Hounsfield units");
  const LungSegmentation seg = ClassicalLungExtractor().extract(ct);
  const Volume lung_labels = to_float(seg.labels);  // what radiological_slice takes
  const Volume domain = to_input_domain(ct);
  const int64_t plane = ct.nx * ct.ny;
  std::vector<int64_t> lung(ct.nz, 0);
  for (int64_t z = 0; z < ct.nz; ++z)
    lung[z] = std::count_if(seg.labels.voxels.begin() + z * plane, seg.labels.voxels.begin() + (z + 1) * plane,
                            [](uint8_t v) { return v != 0; });
  const int64_t most = *std::max_element(lung.begin(), lung.end());
  std::vector<AnnotatedSlice> out;
  for (int64_t z = 0; z < ct.nz; ++z) {
    if (!seg.slice_has_lung[z] || double(lung[z]) < min_lung_fraction * double(most)) continue;
    AnnotatedSlice s;
    s.name = "slice " + std::to_string(z);
    s.image = radiological_slice(domain, z);
    s.lungs = radiological_slice(lung_labels, z);
    out.push_back(std::move(s));
  }
  CR_CHECK(!out.empty(), "synth: no slice of " << series << " holds enough lung to host lesions");
  return out;
}

}  // namespace covidrate::data
