#include "data/synth_set.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "data/image2d.h"
#include "data/input_domain.h"
#include "data/lungs.h"
#include "data/overlay.h"
#include "nn/error.h"
#include "nn/json.h"
#include "nn/text_file.h"

namespace covidrate::data {

namespace {

namespace fs = std::filesystem;

// The pair as it is written: cropped around the healthy lungs with a margin
// (the MedSeg pictures are cropped around the chest) and laid out like MedSeg.
struct WrittenPair {
  Volume image, mask, lungs;
};
WrittenPair lay_out(const SyntheticPair& pair, const AnnotatedSlice& healthy, double margin) {
  Box box = nonzero_box(healthy.lungs);
  // Rounded down (with a hair of slack for 0.1's binary error), as the integer
  // division by 10 that wrote version 2's pairs did: the same pairs at 0.10.
  const auto mx = static_cast<int64_t>(std::floor(margin * double(box.x1 - box.x0) + 1e-9));
  const auto my = static_cast<int64_t>(std::floor(margin * double(box.y1 - box.y0) + 1e-9));
  box = {box.x0 - mx, box.y0 - my, box.x1 + mx, box.y1 + my};
  return {medseg_layout(crop(pair.image, box)), medseg_layout(crop(pair.mask, box)),
          medseg_layout(crop(healthy.lungs, box))};
}

void write_gray(const fs::path& path, const Volume& v, float scale) {
  std::vector<uint8_t> px(v.voxels.size());
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t(std::lround(std::clamp(v.voxels[i] * scale, 0.f, 255.f)));
  write_png_gray(path.string(), px.data(), v.nx, v.ny);
}

RgbImage preview(const WrittenPair& w) {
  const Volume lungs = medseg_picture_displayed(w.lungs);
  RgbImage p = grey_slice(medseg_picture_displayed(w.image), 0);
  draw_outline(p, lungs, 0, float(kRightLung), kRightLungColour);
  draw_outline(p, lungs, 0, float(kLeftLung), kLeftLungColour);
  draw_outline(p, medseg_picture_displayed(w.mask), 0, 1, kLesionColour);
  return p;
}

}  // namespace

SynthSetReport write_synthetic_set(const std::vector<AnnotatedSlice>& infected,
                                   const std::vector<AnnotatedSlice>& healthy, double ratio, uint64_t seed,
                                   const std::string& out_dir,
                                   const std::function<void(int64_t, int64_t)>& progress, double margin) {
  CR_CHECK(!infected.empty() && !healthy.empty(), "synth: needs infected and healthy slices");
  CR_CHECK(ratio > 0, "synth: ratio must be positive, got " << ratio);
  CR_CHECK(margin >= 0 && margin <= 1, "synth: margin must be in [0, 1], got " << margin);
  const int64_t wanted = std::llround(ratio * double(infected.size()));
  CR_CHECK(wanted > 0, "synth: a ratio of " << ratio << " with " << infected.size() << " infected slices makes no pair");
  const fs::path out(out_dir);
  CR_CHECK(!fs::exists(out), out.string() << " already exists; synth writes a new folder");
  const fs::path tmp = start_temp_folder(out_dir);  // an interrupted run's is replaced
  SynthSetReport r;
  // A failure on the way (a picture that cannot be written) takes the
  // partial folder with it.
  try {
    fs::create_directories(tmp / "images");
    fs::create_directories(tmp / "masks");
    r.wanted = wanted;
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<size_t> pick(0, healthy.size() - 1);
    constexpr int kTriesPerPick = 20;  // healthy slices tried before an infected slice is passed over
    std::vector<RgbImage> previews;
    std::string sources;  // sources.json's members
    double rate_sum = 0;
    // Each infected slice in turn; one whose lesions land in no healthy lung with
    // a rate above 0.01 (tiny lesions) is passed over, so the pick limit only
    // stops a set in which almost nothing qualifies.
    for (int64_t picks = 0; r.written < r.wanted && picks < 3 * r.wanted; ++picks) {
      const AnnotatedSlice& source = infected[size_t(picks) % infected.size()];
      bool made = false;
      for (int t = 0; t < kTriesPerPick && !made; ++t) {
        const AnnotatedSlice& target = healthy[pick(rng)];
        const auto pair = insert_lesions(source, target);
        if (!pair) continue;
        const WrittenPair w = lay_out(*pair, target, margin);
        char stem[32];
        std::snprintf(stem, sizeof stem, "synth_%05lld", static_cast<long long>(r.written));
        const std::string name = std::string(stem) + ".png";
        write_gray(tmp / "images" / name, w.image, 1.f);
        write_gray(tmp / "masks" / name, w.mask, 255.f);
        sources += std::string(sources.empty() ? "" : ",\n") + "  " + json::quote(stem) +
                   ": {\"lesions_from\": " + json::quote(source.name) + ", \"healthy\": " + json::quote(target.name) + "}";
        if (previews.size() < 8) previews.push_back(preview(w));
        rate_sum += pair->infection_rate;
        ++r.written;
        made = true;
      }
      if (!made) ++r.passed_over;
      if (progress) progress(r.written, r.wanted);
    }
    if (!previews.empty()) {
      const RgbImage m = montage(previews, 4);
      write_png_rgb((tmp / "overview.png").string(), m.rgb.data(), m.width, m.height);
    }
    write_text_atomically((tmp / "sources.json").string(), "{\n" + sources + "\n}\n");
    r.mean_infection_rate = r.written ? rate_sum / double(r.written) : 0.0;
    publish_folder(tmp.string(), out.string());
  } catch (...) {
    remove_temp_folder(tmp.string());  // its mark last
    throw;
  }
  return r;
}

std::optional<std::map<std::string, std::string>> read_synthetic_sources(const std::string& dir) {
  const fs::path path = fs::path(dir) / "sources.json";
  if (!fs::exists(path)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CR_CHECK(in.good() || in.eof(), "cannot read " << path.string());
  json::Value root;
  try {
    root = json::parse(text);
  } catch (const Error& e) {
    CR_FAIL(path.string() << ": " << e.what());
  }
  CR_CHECK(root.kind == json::Value::Kind::Object, path.string() << ": not a JSON object of pairs");
  std::map<std::string, std::string> sources;
  for (const auto& [pair, origin] : root.members) {
    const json::Value* from = origin.find("lesions_from");
    CR_CHECK(origin.kind == json::Value::Kind::Object && from && from->kind == json::Value::Kind::String,
             path.string() << ": pair '" << pair << "' has no \"lesions_from\" name");
    sources[pair] = from->text;
  }
  return sources;
}

}  // namespace covidrate::data
