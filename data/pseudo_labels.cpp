#include "data/pseudo_labels.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "data/image2d.h"
#include "data/input_domain.h"
#include "data/lungs.h"
#include "data/overlay.h"
#include "data/prepare.h"
#include "data/read_any.h"
#include "kernels/ops.h"
#include "nn/autograd.h"
#include "nn/error.h"
#include "nn/text_file.h"

namespace covidrate::data {

namespace fs = std::filesystem;

std::vector<std::string> pictures_in(const std::string& dir) {
  CR_CHECK(fs::is_directory(dir), "pseudo-label: " << dir << " is not a folder");
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::string ext = entry.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    if (entry.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg"))
      out.push_back(entry.path().string());
  }
  std::sort(out.begin(), out.end());
  CR_CHECK(!out.empty(), "pseudo-label: " << dir << " holds no PNG or JPG picture");
  check_distinct_stems(out, "pseudo-label");
  return out;
}

namespace {

// A prediction that may be kept: its pseudo-label on the picture's grid.
struct Candidate {
  size_t index = 0;  // into the scored slices
  int64_t nx = 0, ny = 0;
  std::vector<uint8_t> mask;  // 0 / 255
};

void write_folder(const std::string& out_dir, const std::vector<ScoredSlice>& slices,
                  const std::vector<Candidate>& candidates) {
  const fs::path tmp = out_dir + ".tmp";
  fs::remove_all(tmp);  // left by an interrupted run
  try {
    fs::create_directories(tmp / "images");
    fs::create_directories(tmp / "masks");
    std::vector<RgbImage> previews;  // the most certain first (candidates are sorted)
    for (const Candidate& c : candidates) {
      const ScoredSlice& s = slices[c.index];
      if (!s.kept) continue;
      const fs::path picture(s.path);
      fs::copy_file(picture, tmp / "images" / (s.name + picture.extension().string()));
      write_png_gray((tmp / "masks" / (s.name + ".png")).string(), c.mask.data(), c.nx, c.ny);
      if (previews.size() < 12) {  // a look at what training will be told, lesions outlined
        // In the radiological display, as segment draws its montage.
        const Volume image = read_image(s.path);
        Volume mask = image;
        for (size_t i = 0; i < mask.voxels.size(); ++i) mask.voxels[i] = c.mask[i] != 0 ? 1.f : 0.f;
        previews.push_back(grey_slice(medseg_picture_displayed(image), 0));
        draw_outline(previews.back(), medseg_picture_displayed(std::move(mask)), 0, 1.f, kLesionColour);
      }
    }
    if (!previews.empty()) {
      const RgbImage m = montage(previews, 4);
      write_png_rgb((tmp / "overview.png").string(), m.rgb.data(), m.width, m.height);
    }
    // The note column came last, so that readers of the first four still read them.
    std::string csv = "name,certainty_index,lesion_percent,kept,note\n";
    for (const ScoredSlice& s : slices) {
      char numbers[64];
      std::snprintf(numbers, sizeof numbers, ",%.6f,%.4f,%d,", s.certainty, s.lesion_percent, s.kept ? 1 : 0);
      csv += csv_field(s.name) + numbers + (s.lung ? "" : kNoLungNote) + "\n";
    }
    write_text_atomically((tmp / "certainty.csv").string(), csv);  // checked to the close, with the reason
    fs::rename(tmp, out_dir);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace

std::vector<ScoredSlice> make_pseudo_labels(const std::vector<std::string>& pictures, const SegmentationNet& net,
                                            const PseudoLabelOptions& o, const std::string& out_dir) {
  CR_CHECK(o.cutoff >= 0 && o.cutoff < 1, "pseudo-label: cutoff must be in [0, 1), got " << o.cutoff);
  CR_CHECK(o.threshold >= 0 && o.threshold < 1, "pseudo-label: threshold must be in [0, 1), got " << o.threshold);
  CR_CHECK(o.min_certainty >= 0 && o.min_certainty <= 1,
           "pseudo-label: the least certainty must be in [0, 1], got " << o.min_certainty);
  CR_CHECK(o.batch >= 1 && o.top >= 0, "pseudo-label: batch " << o.batch << ", top " << o.top);
  CR_CHECK(out_dir.empty() || !fs::exists(out_dir), "pseudo-label: " << out_dir << " already exists");
  check_distinct_stems(pictures, "pseudo-label");
  const ClassicalLungExtractor lungs;
  const int64_t total = static_cast<int64_t>(pictures.size()), size = o.size;
  std::vector<ScoredSlice> slices(pictures.size());
  std::vector<Candidate> candidates;
  if (o.progress) o.progress(0, total);
  for (int64_t first = 0; first < total; first += o.batch) {
    const int64_t count = std::min(o.batch, total - first);
    std::vector<Volume> images(count);
    std::vector<PreparedSlice> prepared(count);
    std::vector<float> batch;
    batch.reserve(static_cast<size_t>(count * size * size));
    for (int64_t k = 0; k < count; ++k) {
      const std::string& path = pictures[first + k];
      images[k] = read_image(path);
      CR_CHECK(images[k].intensity == Intensity::Picture8Bit,
               "pseudo-label: " << path << " is not a grey picture (a binary PNG reads as a mask)");
      // In the MedSeg layout, as segment reads a picture (the lungs' sides follow from it).
      set_medseg_picture_orientation(images[k]);
      prepared[k] = prepare_slice(images[k], nullptr, nullptr, size);
      batch.insert(batch.end(), prepared[k].image.begin(), prepared[k].image.end());
      ScoredSlice& s = slices[first + k];
      s.path = path;
      s.name = fs::path(path).stem().string();
      // segment's check: no lung found (none, or "lung" over 90 % of the picture, as in noise) is not a chest.
      s.lung = lungs.extract(images[k]).slice_has_lung[0] != 0;
    }
    std::vector<float> probabilities, certainty;
    {
      ag::NoGrad no_grad;
      const Tensor input = Tensor::from_vector({count, 1, size, size}, batch).to(o.device);
      const Tensor output = net.forward(ag::Var(input)).value();
      Tensor ci = Tensor::empty({count}, output.dtype(), output.device());
      ops::certainty_index(output, o.cutoff, ci);  // on the device, where the batch is
      certainty = ci.to_vector();
      probabilities = output.to_vector();
    }
    for (int64_t k = 0; k < count; ++k) {
      ScoredSlice& s = slices[first + k];
      s.certainty = certainty[k];
      const std::vector<float> p = to_original_grid(probabilities.data() + k * size * size, prepared[k].placement);
      Candidate c;
      c.index = static_cast<size_t>(first + k);
      c.nx = images[k].nx;
      c.ny = images[k].ny;
      c.mask.resize(p.size());
      int64_t lesion = 0;
      for (size_t i = 0; i < p.size(); ++i) lesion += (c.mask[i] = p[i] > o.threshold ? 255 : 0) != 0;
      s.lesion_percent = 100.0 * static_cast<double>(lesion) / static_cast<double>(p.size());
      if (s.lung && s.certainty > 0 && s.certainty >= o.min_certainty) candidates.push_back(std::move(c));
    }
    if (o.progress) o.progress(first + count, total);
  }

  // The most certain first; equal indices in name order, so the choice is reproducible.
  std::stable_sort(candidates.begin(), candidates.end(), [&](const Candidate& a, const Candidate& b) {
    return slices[a.index].certainty > slices[b.index].certainty;
  });
  if (o.top > 0 && static_cast<int64_t>(candidates.size()) > o.top) candidates.resize(static_cast<size_t>(o.top));
  for (const Candidate& c : candidates) slices[c.index].kept = true;
  if (!out_dir.empty()) write_folder(out_dir, slices, candidates);
  return slices;
}

}  // namespace covidrate::data
