// covidrate synth: the paper's synthetic lesion insertion as a data-set builder.
// Writes ratio x N image/mask pairs for a training set of N infected slices,
// in the MedSeg layout (images/, masks/), plus an overview montage.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "data/image2d.h"
#include "data/input_domain.h"
#include "data/lungs.h"
#include "data/overlay.h"
#include "data/synth.h"
#include "nn/error.h"

namespace covidrate::tools {

namespace {

namespace fs = std::filesystem;
using namespace covidrate::data;

void usage(FILE* out) {
  std::fprintf(out,
               "usage: covidrate synth --ratio R --out DIR [--seed S] [--train DIR] [--healthy SERIES]\n\n"
               "Pastes the lesions of each training slice into healthy lungs (COVID-Rate's augmentation)\n"
               "and writes R x N pairs for a training set of N slices.\n\n"
               "  --ratio R         synthetic pairs per training slice (e.g. 1, 2, 0.5)\n"
               "  --out DIR         output folder (must not exist): DIR/images, DIR/masks, DIR/overview.png\n"
               "  --seed S          random seed for the pairing (default 1)\n"
               "  --train DIR       infected slices, MedSeg layout (default $COVIDRATE_DATA/medseg-semiseg/train)\n"
               "  --healthy SERIES  healthy CT, DICOM folder or NIfTI (default $COVIDRATE_DATA/ct-healthy-tcga)\n");
}

std::string default_under_data(const char* sub) {
  const char* root = std::getenv("COVIDRATE_DATA");
  return root ? (fs::path(root) / sub).string() : std::string();
}

// The pair as it will be written: cropped around the healthy lungs with a margin
// (the MedSeg pictures are cropped around the chest) and laid out like MedSeg.
struct WrittenPair {
  Volume image, mask, lungs;
};
WrittenPair lay_out(const SyntheticPair& pair, const AnnotatedSlice& healthy) {
  Box box = nonzero_box(healthy.lungs);
  const int64_t mx = (box.x1 - box.x0) / 10, my = (box.y1 - box.y0) / 10;
  box = {box.x0 - mx, box.y0 - my, box.x1 + mx, box.y1 + my};
  return {medseg_layout(crop(pair.image, box)), medseg_layout(crop(pair.mask, box)),
          medseg_layout(crop(healthy.lungs, box))};
}

void write_gray(const fs::path& path, const Volume& v, float scale) {
  std::vector<uint8_t> px(v.voxels.size());
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t(std::lround(std::clamp(v.voxels[i] * scale, 0.f, 255.f)));
  write_png_gray(path.string(), px.data(), v.nx, v.ny);
}

}  // namespace

int cmd_synth(int argc, char** argv) {
  double ratio = -1;
  std::string out_dir, train = default_under_data("medseg-semiseg/train"),
                       healthy_series = default_under_data("ct-healthy-tcga");
  uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      CR_CHECK(i + 1 < argc, a << " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else if (a == "--ratio") {
      ratio = std::atof(value().c_str());
    } else if (a == "--out") {
      out_dir = value();
    } else if (a == "--seed") {
      seed = std::strtoull(value().c_str(), nullptr, 10);
    } else if (a == "--train") {
      train = value();
    } else if (a == "--healthy") {
      healthy_series = value();
    } else {
      usage(stderr);
      CR_FAIL("unknown option " << a);
    }
  }
  if (ratio <= 0 || out_dir.empty()) {
    usage(stderr);
    return 2;
  }
  CR_CHECK(!train.empty() && !healthy_series.empty(),
           "--train and --healthy are needed when COVIDRATE_DATA is not set");
  const fs::path out = fs::path(out_dir), tmp = fs::path(out_dir + ".tmp");
  CR_CHECK(!fs::exists(out), out.string() << " already exists; synth writes a new folder");

  std::fprintf(stderr, "synth: reading %s and %s\n", train.c_str(), healthy_series.c_str());
  const std::vector<AnnotatedSlice> infected = load_infected_slices(train);
  const std::vector<AnnotatedSlice> healthy = load_healthy_slices(healthy_series);
  const int64_t wanted = std::llround(ratio * double(infected.size()));
  std::fprintf(stderr, "synth: %zu infected slices, %zu healthy slices, %lld pairs to make\n", infected.size(),
               healthy.size(), static_cast<long long>(wanted));

  fs::remove_all(tmp);  // a leftover of an interrupted run
  fs::create_directories(tmp / "images");
  fs::create_directories(tmp / "masks");
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, healthy.size() - 1);
  constexpr int kTriesPerPair = 20;  // healthy slices tried before a source slice is given up on
  std::vector<RgbImage> previews;
  int64_t written = 0, picks = 0, gave_up = 0;
  double rate_sum = 0;
  // Each training slice in turn; a slice whose lesions land in no healthy lung
  // with a rate above 0.01 (tiny lesions) is passed over, so the pick limit
  // only stops a set in which almost nothing qualifies.
  while (written < wanted && picks < 3 * wanted) {
    const AnnotatedSlice& source = infected[size_t(picks++) % infected.size()];
    bool made = false;
    for (int t = 0; t < kTriesPerPair && !made; ++t) {
      const AnnotatedSlice& target = healthy[pick(rng)];
      const auto pair = insert_lesions(source, target);
      if (!pair) continue;
      const WrittenPair w = lay_out(*pair, target);
      char name[32];
      std::snprintf(name, sizeof name, "synth_%05lld.png", static_cast<long long>(written));
      write_gray(tmp / "images" / name, w.image, 1.f);
      write_gray(tmp / "masks" / name, w.mask, 255.f);
      if (previews.size() < 8) {
        RgbImage p = grey_slice(w.image, 0);
        draw_outline(p, w.lungs, 0, float(kRightLung), kRightLungColour);
        draw_outline(p, w.lungs, 0, float(kLeftLung), kLeftLungColour);
        draw_outline(p, w.mask, 0, 1, kLesionColour);
        previews.push_back(std::move(p));
      }
      rate_sum += pair->infection_rate;
      ++written;
      made = true;
    }
    if (!made) ++gave_up;
    std::fprintf(stderr, "\rsynth: %lld/%lld pairs", static_cast<long long>(written), static_cast<long long>(wanted));
  }
  std::fprintf(stderr, "\n");
  if (!previews.empty()) {
    const RgbImage m = montage(previews, 4);
    write_png_rgb((tmp / "overview.png").string(), m.rgb.data(), m.width, m.height);
  }
  fs::rename(tmp, out);
  std::printf("synth: wrote %lld of %lld pairs to %s (mean infection rate %.3f); %lld source picks gave no "
              "pair with infection rate > 0.01\n",
              static_cast<long long>(written), static_cast<long long>(wanted), out.string().c_str(), written ? rate_sum / double(written) : 0.0,
              static_cast<long long>(gave_up));
  return 0;
}

}  // namespace covidrate::tools
