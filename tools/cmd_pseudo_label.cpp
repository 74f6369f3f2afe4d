// covidrate pseudo-label: the first half of COVID-Rate's unsupervised
// enhancement. Trained weights segment a folder of unlabelled slices; each
// prediction is scored by its certainty index and the most certain become
// image/mask pairs for `covidrate train --pseudo DIR` (data/pseudo_labels.h;
// docs/training.md, "Unsupervised enhancement").
#include <cstdio>
#include <filesystem>
#include <map>
#include <functional>
#include <string>

#include "data/pseudo_labels.h"
#include "data/report.h"
#include "model/load_weights.h"
#include "nn/error.h"
#include "nn/safetensors.h"
#include "tools/cli.h"

namespace covidrate::tools {

namespace {

namespace fs = std::filesystem;

struct PseudoLabelCommandOptions {
  std::string weights, images, out;
  NetworkOptions network;  // --device (default $COVIDRATE_DEVICE, else cpu), --precision, --width, --size, --no-cpb
  data::PseudoLabelOptions label;
};

void usage(FILE* out) {
  const data::PseudoLabelOptions d;
  std::fprintf(out,
               "usage: covidrate pseudo-label --weights FILE --images DIR --out DIR [options]\n\n"
               "Segments every unlabelled slice of DIR (PNG or JPG), scores each prediction by its certainty\n"
               "index (the mean probability of the pixels above --cutoff; 0 when there are none: Enshaei et\n"
               "al. 2022) and writes the most certain as training pairs: OUT/images/ (the pictures as they\n"
               "are), OUT/masks/ (probability > --threshold, 0/255 PNG), OUT/certainty.csv (every slice) and\n"
               "OUT/overview.png (the 12 most certain, their pseudo-labels outlined).\n"
               "Then fine-tune with: covidrate train ... --init FILE --pseudo OUT\n\n"
               "  --weights FILE       safetensors written by 'covidrate train' (the network to enhance)\n"
               "  --images DIR         the unlabelled slices, from the source the network should adapt to\n"
               "  --out DIR            a new folder; it appears only once complete. Until then the\n"
               "                       slices scored so far are kept in DIR.partial/, and the same\n"
               "                       command, run again, resumes there\n"
               "  --min-certainty X    keep predictions whose index is at least X (default %g)\n"
               "  --top N              of those, keep at most the N most certain (default: all)\n"
               "  --cutoff C           the index's probability cut-off (default %g, the paper's)\n"
               "  --threshold T        pseudo-label pixels are lesion above T (default %g)\n"
               "  --batch N            slices per forward pass (default %lld)\n"
               "  --device cpu|cuda    where the network runs (default cpu, or $COVIDRATE_DEVICE)\n"
               "  --precision P        f32 (default) or bf16 (for CUDA)\n"
               "  --arch NAME, --width W, --size S, --no-cpb, --no-se\n"
               "                       the architecture, when the weights' metadata lacks it\n\n"
               "Slices where the network marks nothing above the cut-off have index 0 and are never kept;\n"
               "nor are pictures where segment's lung check finds no lung (not a chest CT slice): they are\n"
               "scored, marked 'no lung' in certainty.csv and counted in the summary.\n",
               d.min_certainty, d.cutoff, d.threshold, static_cast<long long>(d.batch));
}

// The options, or UsageError; false for --help.
bool parse_options(int argc, char** argv, PseudoLabelCommandOptions& o) {
  ArgScanner args(argc, argv);
  while (args.next()) {
    if (args.help()) {
      return false;
    } else if (args.is("--weights")) {
      o.weights = args.value();
    } else if (args.is("--images")) {
      o.images = args.value();
    } else if (args.is("--out")) {
      o.out = args.folder_value();
    } else if (args.is("--min-certainty")) {
      o.label.min_certainty = args.number(0, 1);
    } else if (args.is("--top")) {
      o.label.top = args.integer(1, 1000000000);
    } else if (args.is("--cutoff")) {
      o.label.cutoff = args.number(0, 1);
      CR_USAGE_CHECK(o.label.cutoff < 1, "--cutoff must be below 1, got " << o.label.cutoff);
    } else if (args.is("--threshold")) {
      o.label.threshold = args.number(0, 1);
      CR_USAGE_CHECK(o.label.threshold < 1, "--threshold must be below 1, got " << o.label.threshold);
    } else if (args.is("--batch")) {
      o.label.batch = args.integer(1, 4096);
    } else if (!parse_network_option(args, o.network)) {
      args.unknown();
    }
  }
  CR_USAGE_CHECK(!o.weights.empty() && !o.images.empty() && !o.out.empty(), "--weights, --images and --out are required");
  resolve_device(o.network);
  return true;
}

}  // namespace

int cmd_pseudo_label(int argc, char** argv) {
  PseudoLabelCommandOptions o;
  if (!parse_options(argc, argv, o)) {
    usage(stdout);
    return 0;
  }
  const OutputLock lock("pseudo-label", o.out);
  // Refused before the slow part, not after it.
  CR_CHECK(!fs::exists(o.out), "pseudo-label: " << o.out << " already exists; choose another --out");
  check_output_folder("pseudo-label", "--out", o.out);
  const std::vector<std::string> pictures = data::pictures_in(o.images);
  const std::map<std::string, std::string> metadata = safetensors::load_metadata(o.weights);
  check_whole_slice_weights(o.weights, metadata, "pseudo-label");
  const ModelSpec spec = resolve_model_spec(o.weights, metadata, o.network.architecture);
  const std::unique_ptr<SegmentationNet> net = load_for_inference(o.weights, spec, o.network.device, o.network.precision);
  o.label.size = spec.size;
  o.label.device = o.network.device;
  // What the scores depend on (the device only by rounding: a run begun on
  // the CPU may finish on a GPU).
  o.label.network_identity = "weights fnv1a64 " + data::file_fnv1a64(o.weights) + ", " + describe(spec.config) +
                             ", input " + std::to_string(spec.size) + ", " + to_string(o.network.precision);
  std::fprintf(stderr, "pseudo-label: %zu slices from %s, weights %s (%s, input %lld), %s, %s\n",
               pictures.size(), o.images.c_str(), o.weights.c_str(), describe(spec.config).c_str(),
               static_cast<long long>(spec.size), to_string(o.network.device), to_string(o.network.precision));

  Progress progress("pseudo-label");
  o.label.progress = std::ref(progress);
  const std::string partial = o.out + data::kPartialSuffix;
  o.label.resumed = [&](int64_t scored, int64_t all) {
    std::fprintf(stderr, "pseudo-label: resuming the run in %s: %lld of %lld slices scored there\n", partial.c_str(),
                 static_cast<long long>(scored), static_cast<long long>(all));
  };
  std::vector<data::ScoredSlice> slices;
  try {
    slices = data::make_pseudo_labels(pictures, *net, o.label, o.out);
  } catch (const data::JournalOfOtherSettings&) {
    progress.end();
    throw;  // the same command would not resume it
  } catch (const std::exception& e) {  // a full disk comes as a filesystem_error
    progress.end();
    if (!fs::is_directory(partial)) throw;
    throw Error(error_text(e) + "\n  the slices scored so far are kept in " + partial +
                "; the same command resumes there");
  }

  int64_t kept = 0, empty = 0, no_lung = 0;
  double mean_kept = 0;
  std::string passed_over;  // the first few pictures without lung, by name
  for (const data::ScoredSlice& s : slices) {
    empty += s.certainty == 0;
    if (s.kept) ++kept, mean_kept += s.certainty;
    if (!s.lung && ++no_lung <= 5) passed_over += (no_lung > 1 ? ", " : "") + fs::path(s.path).filename().string();
  }
  if (no_lung > 0)
    std::fprintf(stderr, "pseudo-label: %lld picture%s passed over as not a chest (no lung found): %s%s\n",
                 static_cast<long long>(no_lung), no_lung == 1 ? "" : "s", passed_over.c_str(),
                 no_lung > 5 ? ", ... ('no lung' in certainty.csv)" : "");
  std::printf("pseudo-label: kept %lld of %lld slices (certainty index >= %g%s; mean %.3f), %lld with nothing "
              "above %g, %lld passed over as not a chest (no lung); pairs in %s, every index in %s/certainty.csv\n",
              static_cast<long long>(kept), static_cast<long long>(slices.size()), o.label.min_certainty,
              o.label.top > 0 ? (", the " + std::to_string(o.label.top) + " most certain").c_str() : "",
              kept > 0 ? mean_kept / static_cast<double>(kept) : 0.0, static_cast<long long>(empty), o.label.cutoff,
              static_cast<long long>(no_lung), o.out.c_str(), o.out.c_str());
  return 0;
}

}  // namespace covidrate::tools
