// covidrate eval: the paper's test protocol for a trained network. Every slice
// is prepared as in training (data/prepare.h), segmented in batches in
// evaluation mode, mapped back onto its own grid, and scored there against its
// ground-truth mask (model/metrics.h; definitions in docs/metrics.md).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/image2d.h"
#include "data/input_domain.h"
#include "data/overlay.h"
#include "data/prepare.h"
#include "model/covidrate_net.h"
#include "model/load_weights.h"
#include "model/metrics.h"
#include "nn/autograd.h"
#include "nn/error.h"
#include "nn/safetensors.h"
#include "nn/text_file.h"
#include "tools/cli.h"

namespace covidrate::tools {

namespace {

namespace fs = std::filesystem;

struct EvalOptions {
  std::string weights, images, masks;
  double threshold = 0.5;
  int64_t batch = 4;
  NetworkOptions network;  // --device (default $COVIDRATE_DEVICE, else cpu), --precision, --width, --size, --no-cpb
  bool json = false;
  std::string json_file;  // empty with json: stdout
  std::string save_masks;
  std::string overview;  // PNG of the lowest-Dice slices
  bool lungs = false;
};

// Slices in --overview: the lowest Dice, four rows of six tiles.
constexpr size_t kOverviewTiles = 24;
constexpr int kOverviewColumns = 6;
constexpr int64_t kOverviewSide = 256;

void usage(FILE* out) {
  std::fprintf(out,
               "usage: covidrate eval --weights FILE --images DIR --masks DIR [options]\n\n"
               "Segments every image of DIR with the trained network and scores it against its mask\n"
               "(matched by file stem) at the image's own resolution: Dice, sensitivity, specificity\n"
               "and MAE per image, summarized overall and for groups A (infection rate < 0.015) and B.\n\n"
               "  --weights FILE     safetensors written by 'covidrate train'\n"
               "  --images DIR       slices (PNG or JPG)\n"
               "  --masks DIR        lesion masks, 0/255 PNG\n"
               "  --arch NAME        covid-rate, unet, attention-unet or unet++ (default: the weights'\n"
               "                     metadata, else covid-rate)\n"
               "  --width W          channel multiplier (default: the weights' metadata, else 1)\n"
               "  --size S           network input side, multiple of 16 (default: metadata, else 512)\n"
               "  --no-cpb, --no-se  COVID-Rate trained without context perception boosting, without SE\n"
               "  --threshold T      a pixel is lesion when its probability is above T, in [0, 1) (default 0.5)\n"
               "  --batch N          slices per forward pass (default 4)\n"
               "  --device cpu|cuda  where the network runs (default cpu, or $COVIDRATE_DEVICE)\n"
               "  --precision P      f32 (default) or bf16: what the network computes in (bf16: for CUDA)\n"
               "  --lungs            feed the network the lungs alone (for weights trained with --lungs)\n"
               "  --json [FILE]      the report as JSON, on stdout instead of the table, or into FILE\n"
               "  --save-masks DIR   write each predicted mask as DIR/<stem>.png (0/255, the image's size);\n"
               "                     DIR must not exist, and appears only once every mask is written\n"
               "  --overview FILE    a PNG of the 24 slices with the lowest Dice, worst first, each with\n"
               "                     its Dice: lesion found in green, false alarms in red, missed lesion\n"
               "                     in blue, over the slice in the radiological display (the pictures\n"
               "                     taken to be in the MedSeg layout, as for segment)\n\n"
               "The infection rate is the ground-truth lesion area over the lung area found by the\n"
               "classical lung extractor (over the whole image when it finds no lung).\n");
}

// The options, or UsageError; false for --help.
bool parse_options(int argc, char** argv, EvalOptions& o) {
  ArgScanner args(argc, argv);
  while (args.next()) {
    if (args.help()) {
      return false;
    } else if (args.is("--weights")) {
      o.weights = args.value();
    } else if (args.is("--images")) {
      o.images = args.value();
    } else if (args.is("--masks")) {
      o.masks = args.value();
    } else if (parse_network_option(args, o.network)) {
    } else if (args.is("--threshold")) {
      o.threshold = args.number(0, 1);
      CR_USAGE_CHECK(o.threshold < 1, "--threshold must be below 1, got " << o.threshold);
    } else if (args.is("--batch")) {
      o.batch = args.integer(1, 4096);
    } else if (args.is("--lungs")) {
      o.lungs = true;
    } else if (args.is("--json")) {
      o.json = true;
      // An optional file name: the next argument unless it is another option.
      if (args.has_optional_value()) o.json_file = args.value();
    } else if (args.is("--save-masks")) {
      o.save_masks = args.folder_value();
    } else if (args.is("--overview")) {
      o.overview = args.value();
    } else {
      args.unknown();
    }
  }
  CR_USAGE_CHECK(!o.weights.empty() && !o.images.empty() && !o.masks.empty(),
                 "--weights, --images and --masks are required");
  resolve_device(o.network);
  return true;
}

// The tiles of --overview: the kOverviewTiles lowest Dice seen so far (the
// first of equals stays), each drawn when it enters.
class Overview {
 public:
  void offer(const data::Sample& s, const std::vector<uint8_t>& truth, const std::vector<uint8_t>& predicted,
             double dice) {
    if (tiles_.size() == kOverviewTiles && dice >= tiles_.back().dice) return;
    // Drawn in the radiological display, as segment's montage is: the pictures
    // are taken to be in the MedSeg layout (the transpose of it), which is how
    // the network saw them in training.
    const auto displayed = [&](const std::vector<uint8_t>& mask) {
      data::LabelVolume v = data::same_grid<uint8_t>(s.image, data::Intensity::Label);
      v.voxels.assign(mask.begin(), mask.end());
      return data::medseg_picture_displayed(std::move(v)).voxels;
    };
    data::RgbImage tile = data::shrink_to(
        data::agreement_tile(data::grey_slice(data::medseg_picture_displayed(s.image), 0), displayed(truth),
                             displayed(predicted)),
        kOverviewSide);
    char label[16];
    std::snprintf(label, sizeof label, "%.3f", dice);
    data::fill_rect(tile, 0, 0, 4 + 12 * static_cast<int64_t>(std::strlen(label)), 22, {0, 0, 0});
    data::draw_text(tile, 4, 4, label, 3, {255, 255, 255});
    const auto at = std::upper_bound(tiles_.begin(), tiles_.end(), dice,
                                     [](double d, const Entry& e) { return d < e.dice; });
    tiles_.insert(at, Entry{dice, std::move(tile)});
    if (tiles_.size() > kOverviewTiles) tiles_.pop_back();
  }

  // The montage, worst first (write_png_rgb writes atomically).
  void write(const std::string& path) const {
    CR_CHECK(!tiles_.empty(), "eval: no slice to draw in " << path);
    std::vector<data::RgbImage> pictures;
    for (const Entry& e : tiles_) pictures.push_back(e.tile);
    const data::RgbImage m = data::montage(pictures, kOverviewColumns);
    data::write_png_rgb(path, m.rgb.data(), m.width, m.height);
  }

 private:
  struct Entry {
    double dice;
    data::RgbImage tile;
  };
  std::vector<Entry> tiles_;  // by Dice, ascending
};

std::vector<uint8_t> nonzero(const data::Volume& v) {
  std::vector<uint8_t> out(v.voxels.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = v.voxels[i] != 0.f;
  return out;
}

}  // namespace

int cmd_eval(int argc, char** argv) {
  EvalOptions o;
  if (!parse_options(argc, argv, o)) {
    usage(stdout);
    return 0;
  }
  CR_CHECK(fs::is_regular_file(o.weights), "weights file " << o.weights << " not found");
  // Refused before the slow part, not after it.
  CR_CHECK(o.save_masks.empty() || !fs::exists(o.save_masks),
           o.save_masks << " already exists; --save-masks writes a new folder");
  if (!o.save_masks.empty()) check_output_folder("eval", "--save-masks", o.save_masks);
  if (!o.overview.empty()) check_output_file("--overview", o.overview, {o.weights}, {o.images, o.masks});
  if (!o.json_file.empty()) check_output_file("--json", o.json_file, {o.weights}, {o.images, o.masks});
  CR_USAGE_CHECK(o.overview.empty() || o.json_file.empty() ||
                     fs::absolute(o.overview).lexically_normal() != fs::absolute(o.json_file).lexically_normal(),
                 "--json and --overview name the same file");

  const std::map<std::string, std::string> metadata = safetensors::load_metadata(o.weights);
  // Weights trained on lung-masked slices (train --lungs) are scored on them too.
  if (const auto it = metadata.find("lungs"); it != metadata.end() && it->second == "1" && !o.lungs) {
    o.lungs = true;
    std::fprintf(stderr, "eval: %s was trained on the lungs alone (train --lungs): so are its inputs here\n",
                 o.weights.c_str());
  }
  const ModelSpec spec = resolve_model_spec(o.weights, metadata,
                                            o.network.architecture);
  const NetConfig& config = spec.config;
  const int64_t size = spec.size;
  const std::unique_ptr<SegmentationNet> network = load_for_inference(o.weights, spec, o.network.device, o.network.precision);
  const SegmentationNet& net = *network;

  // Lungs are always extracted: the infection rate that splits the groups is
  // over the lung. They reach the network only with --lungs.
  const data::Dataset set = data::load_dataset(o.images, o.masks, data::DatasetOptions{.lungs = true});
  std::fprintf(stderr, "eval: %lld slices, %s, input %lld x %lld, %s, %s\n",
               static_cast<long long>(set.size()), describe(config).c_str(), static_cast<long long>(size), static_cast<long long>(size), to_string(o.network.device),
               to_string(o.network.precision));

  // An interrupted run's is replaced.
  const std::string masks_tmp = o.save_masks.empty() ? "" : start_temp_folder(o.save_masks);
  // A failure on the way (a mask that cannot be written) takes the partial
  // folder with it.
  TempFolder partial_masks{masks_tmp};

  std::vector<metrics::ImageMetrics> scores;
  Overview overview;
  Progress progress("eval");
  progress(0, set.size());
  for (int64_t first = 0; first < set.size(); first += o.batch) {
    const int64_t count = std::min(o.batch, set.size() - first);
    std::vector<data::PreparedSlice> prepared;
    std::vector<float> batch;
    for (int64_t k = 0; k < count; ++k) {
      const data::Sample& s = set.samples[first + k];
      prepared.push_back(data::prepare_slice(s.image, nullptr, o.lungs ? &s.lungs : nullptr, size));
      batch.insert(batch.end(), prepared.back().image.begin(), prepared.back().image.end());
    }
    std::vector<float> probabilities;
    {
      ag::NoGrad no_grad;
      const Tensor input = Tensor::from_vector({count, 1, size, size}, batch).to(o.network.device);
      probabilities = net.forward(ag::Var(input)).value().to_vector();
    }
    for (int64_t k = 0; k < count; ++k) {
      const data::Sample& s = set.samples[first + k];
      std::vector<float> p = data::to_original_grid(probabilities.data() + k * size * size, prepared[k].placement);
      // Bilinear weights sum to 1 only up to rounding.
      for (float& v : p) v = std::clamp(v, 0.f, 1.f);
      const std::vector<uint8_t> truth = nonzero(s.mask), lung = nonzero(s.lungs);
      metrics::ImageMetrics m =
          metrics::score_image(p.data(), truth.data(), static_cast<int64_t>(p.size()), o.threshold, lung.data());
      m.name = s.name;
      scores.push_back(m);
      if (!o.overview.empty()) {
        std::vector<uint8_t> predicted(p.size());
        for (size_t i = 0; i < p.size(); ++i) predicted[i] = p[i] > o.threshold;
        overview.offer(s, truth, predicted, m.dice);
      }
      if (!masks_tmp.empty()) {
        std::vector<uint8_t> png(p.size());
        for (size_t i = 0; i < p.size(); ++i) png[i] = p[i] > o.threshold ? 255 : 0;
        data::write_png_gray((fs::path(masks_tmp) / (s.name + ".png")).string(), png.data(), s.image.nx,
                             s.image.ny);
      }
    }
    progress(first + count, set.size());
  }
  if (!masks_tmp.empty()) publish_folder(masks_tmp, o.save_masks);
  partial_masks.kept = true;  // renamed: nothing partial left
  if (!o.overview.empty()) {
    overview.write(o.overview);
    std::fprintf(stderr, "eval: the %zu lowest-Dice slices drawn in %s\n",
                 std::min<size_t>(kOverviewTiles, scores.size()), o.overview.c_str());
  }

  const metrics::Summary summary = metrics::summarize(scores);
  if (o.json) {
    const std::string text = metrics::to_json(summary, scores, o.threshold);
    if (o.json_file.empty()) {
      std::fputs(text.c_str(), stdout);
      return 0;
    }
    write_text_atomically(o.json_file, text);
  }
  std::printf("covidrate eval: %s on %s (threshold %g)\n%s", o.weights.c_str(), o.images.c_str(), o.threshold,
              metrics::format_table(summary).c_str());
  return 0;
}

}  // namespace covidrate::tools
