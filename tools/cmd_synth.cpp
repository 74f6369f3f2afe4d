// covidrate synth: the paper's synthetic lesion insertion as a data-set builder.
// Writes ratio x N image/mask pairs for a training set of N infected slices,
// in the MedSeg layout (images/, masks/), plus an overview montage.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

#include "data/synth.h"
#include "data/dataset.h"
#include "data/synth_set.h"
#include "nn/error.h"
#include "tools/cli.h"

namespace covidrate::tools {

namespace {

namespace fs = std::filesystem;
using namespace covidrate::data;

void usage(FILE* out) {
  std::fprintf(out,
               "usage: covidrate synth --ratio R --out DIR [--seed S] [--train DIR] [--split FILE]\n"
               "                       [--healthy SERIES] [--margin F]\n\n"
               "Pastes the lesions of each training slice into healthy lungs (COVID-Rate's augmentation)\n"
               "and writes R x N pairs for a training set of N slices.\n\n"
               "  --ratio R         synthetic pairs per training slice (e.g. 1, 2, 0.5)\n"
               "  --out DIR         output folder (must not exist; missing folders above it are created):\n"
               "                    DIR/images, DIR/masks, DIR/overview.png, DIR/sources.json (the slice\n"
               "                    each pair's lesions come from: 'covidrate train --synthetic DIR' leaves\n"
               "                    out the pairs of its validation slices)\n"
               "  --seed S          random seed for the pairing (default 1)\n"
               "  --train DIR       infected slices, MedSeg layout (default $COVIDRATE_DATA/medseg-semiseg/train)\n"
               "  --split FILE      only the slices a split.json lists under \"train\" (a set for one split)\n"
               "  --healthy SERIES  healthy CT, DICOM folder or NIfTI (default $COVIDRATE_DATA/ct-healthy-tcga)\n"
               "  --margin F        each pair is cut around the healthy lungs, widened by F of the lungs'\n"
               "                    width and height on each side (default 0.02, as segment cuts studies;\n"
               "                    the shipped weights' version 2 was trained on pairs at 0.10)\n");
}

std::string default_under_data(const char* sub) {
  const char* root = std::getenv("COVIDRATE_DATA");
  return root ? (fs::path(root) / sub).string() : std::string();
}

}  // namespace

int cmd_synth(int argc, char** argv) {
  double ratio = -1;
  std::string out_dir, split_file, train = default_under_data("medseg-semiseg/train"),
                       healthy_series = default_under_data("ct-healthy-tcga");
  uint64_t seed = 1;
  double margin = kSynthMargin;
  ArgScanner args(argc, argv);
  while (args.next()) {
    if (args.help()) {
      usage(stdout);
      return 0;
    } else if (args.is("--ratio")) {
      ratio = args.number(1e-6, 1000);
    } else if (args.is("--out")) {
      out_dir = args.folder_value();
    } else if (args.is("--seed")) {
      seed = static_cast<uint64_t>(args.integer(0, kMaxSeed));
    } else if (args.is("--train")) {
      train = args.value();
    } else if (args.is("--split")) {
      split_file = args.value();
    } else if (args.is("--healthy")) {
      healthy_series = args.value();
    } else if (args.is("--margin")) {
      margin = args.number(0, 1);
    } else {
      args.unknown();
    }
  }
  CR_USAGE_CHECK(ratio > 0 && !out_dir.empty(), "--ratio and --out are required");
  CR_USAGE_CHECK(!train.empty() && !healthy_series.empty(),
                 "--train and --healthy are needed when COVIDRATE_DATA is not set");
  // Refused before the slow reading, not after it.
  CR_CHECK(!fs::exists(out_dir), out_dir << " already exists; synth writes a new folder");
  check_output_folder("synth", "--out", out_dir);

  std::fprintf(stderr, "synth: reading %s and %s\n", train.c_str(), healthy_series.c_str());
  const std::vector<std::string> only =
      split_file.empty() ? std::vector<std::string>{} : read_split_names(split_file).train;
  // An empty list would mean "every slice" below, validation slices included.
  CR_CHECK(split_file.empty() || !only.empty(), "synth: " << split_file << " lists no slice under \"train\"");
  const std::vector<AnnotatedSlice> infected = load_infected_slices(train, 0, only);
  const std::vector<AnnotatedSlice> healthy = load_healthy_slices(healthy_series);
  std::fprintf(stderr, "synth: %zu infected slices, %zu healthy slices\n", infected.size(), healthy.size());
  Progress progress("synth", "pairs");
  progress(0, 0);  // starts the clock
  const SynthSetReport r = write_synthetic_set(infected, healthy, ratio, seed, out_dir, std::ref(progress), margin);
  progress.end();
  std::printf("synth: wrote %lld of %lld pairs to %s (mean infection rate %.3f); %lld infected-slice picks gave "
              "no pair with infection rate > 0.01\n",
              static_cast<long long>(r.written), static_cast<long long>(r.wanted), out_dir.c_str(),
              r.mean_infection_rate, static_cast<long long>(r.passed_over));
  return 0;
}

}  // namespace covidrate::tools
