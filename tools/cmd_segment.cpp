// covidrate segment: from a chest CT (DICOM series, NIfTI, PNG/JPG slices, or a
// folder of studies) to lesion masks, severity figures and a visual report.
// The pipeline is data/segment_pipeline.h; the study folder data/segment_study.h;
// the figures and pictures data/report.h; docs/segment.md describes the outputs.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <fstream>
#include <future>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "data/segment_study.h"
#include "model/load_weights.h"
#include "nn/error.h"
#include "nn/json.h"
#include "nn/safetensors.h"
#include "nn/text_file.h"
#include "tools/cli.h"

namespace covidrate::tools {

namespace {

namespace fs = std::filesystem;

struct SegmentCommandOptions {
  std::vector<std::string> inputs;
  std::string out, weights;
  double threshold = 0.5;
  int64_t batch = 0;  // 0: the device's default (default_batch)
  NetworkOptions network;  // --device (default $COVIDRATE_DEVICE, else cpu), --precision, --width, --size, --no-cpb
  bool save_probability = false, save_lungs = false;
  double crop_margin = data::SegmentOptions{}.crop_margin;
  int prefetch = -1;  // batch mode: read the next study during this one's network; -1: on with CUDA
};

// Slices per forward pass when --batch is not given. On the CPU a bigger batch
// buys no speed (each conv already fills the cores with one slice) and costs
// memory: the ricord sample at full width took 10.5 s / 1.2 GB at batch 1 and
// 11.7 s / 2.9 GB at batch 4. A GPU needs several slices to fill its SMs; 8 at
// full width keeps float32 activations near 5 GB, within a workstation card.
int64_t default_batch(Device device) { return device == Device::CUDA ? 8 : 1; }

void usage(FILE* out) {
  std::fprintf(out,
               "usage: covidrate segment INPUT... --out DIR [options]\n\n"
               "Segments COVID-19 lesions in a chest CT and reports their extent per slice and per lung.\n"
               "INPUT is a DICOM folder or file, a NIfTI file, one or more PNG/JPG slices, or a folder of\n"
               "studies (NIfTI files and/or sub-folders, each holding a DICOM series, pictures or one NIfTI\n"
               "file): then DIR gets one folder per study and summary.csv.\n\n"
               "  --out DIR          output folder (per study: lesion_mask.nii.gz, report.json, report.html,\n"
               "                     infection_rate.png, most_affected.png, summary.csv; docs/segment.md)\n"
               "  --weights FILE     safetensors written by 'covidrate train', or its run folder (default: $COVIDRATE_WEIGHTS,\n"
               "                     else the weights shipped with the program: weights/ of the source\n"
               "                     tree, or share/covidrate/weights/ of an installed covidrate; else\n"
               "                     weights/ of the current folder)\n"
               "  --device cpu|cuda  where the network runs (default cpu, or $COVIDRATE_DEVICE)\n"
               "  --precision P      f32 (default) or bf16: what the network computes in; bf16 is for\n"
               "                     CUDA (on the CPU it runs the slow reference path)\n"
               "  --threshold T      a voxel is lesion when its probability is above T (default 0.5)\n"
               "  --batch N          slices per forward pass (default 1 on the CPU, 8 on CUDA; on CUDA\n"
               "                     a study's last pass is filled up with blank slices to a power of two)\n"
               "  --arch NAME        covid-rate, unet, attention-unet or unet++ (default: the weights'\n"
               "                     metadata, else covid-rate)\n"
               "  --width W          channel multiplier (default: the weights' metadata, else 1)\n"
               "  --size S           network input side, multiple of 16 (default: metadata, else 512)\n"
               "  --no-cpb, --no-se  COVID-Rate trained without context perception boosting, without SE\n"
               "  --crop-margin F    slices go to the network cut to the box around the study's lungs,\n"
               "                     widened by F of its size per side, as the training pictures are cut\n"
               "                     (default 0.02; no cut when only one lung is found); 'none': whole slices\n"
               "  --save-prob        also write the lesion probability map (probability.nii.gz)\n"
               "  --save-lungs       also write the lung labels (lungs.nii.gz: 1 right, 2 left)\n"
               "  --prefetch on|off  batch mode: read the next study and extract its lungs, and write the\n"
               "                     previous one's folder, while the network runs this one (default on with\n"
               "                     CUDA, off on the CPU, where the network has the cores and it would only\n"
               "                     hold two more studies in memory)\n\n"
               "A study's folder appears only once complete (it is written as DIR.tmp first). In batch mode\n"
               "studies whose folder exists are skipped, so an interrupted batch resumes where it stopped.\n"
               "Research software, not a medical device.\n");
}

// The options, or UsageError; false for --help.
bool parse_options(int argc, char** argv, SegmentCommandOptions& o) {
  ArgScanner args(argc, argv);
  while (args.next()) {
    if (args.help()) {
      return false;
    } else if (args.is("--out")) {
      o.out = args.folder_value();
    } else if (args.is("--weights")) {
      o.weights = args.value();
    } else if (args.is("--threshold")) {
      o.threshold = args.number(0, 1);
      // No probability is above 1: every study would read healthy.
      CR_USAGE_CHECK(o.threshold < 1, "--threshold must be below 1, got " << o.threshold);
    } else if (args.is("--batch")) {
      o.batch = args.integer(1, 4096);
    } else if (parse_network_option(args, o.network)) {
    } else if (args.is("--crop-margin")) {
      const std::string v = args.value();
      o.crop_margin = v == "none" ? -1.0 : parse_number("--crop-margin", v, 0, 10);
    } else if (args.is("--prefetch")) {
      const std::string v = args.value();
      CR_USAGE_CHECK(v == "on" || v == "off", "--prefetch must be 'on' or 'off', got '" << v << "'");
      o.prefetch = v == "on";
    } else if (args.is("--save-prob")) {
      o.save_probability = true;
    } else if (args.is("--save-lungs")) {
      o.save_lungs = true;
    } else {
      o.inputs.push_back(args.positional());
    }
  }
  CR_USAGE_CHECK(!o.inputs.empty() && !o.out.empty(), "an INPUT and --out are required");
  resolve_device(o.network);
  return true;
}

// The best weights of a folder: its own best.safetensors, else the newest
// best.safetensors of a training run below it (a run the user made beats what
// was shipped), else a shipped file directly in the folder (weights/*.safetensors,
// the first by name when there are several; weights/README.md is their card).
std::optional<fs::path> best_weights_in(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return std::nullopt;
  if (fs::is_regular_file(dir / "best.safetensors")) return dir / "best.safetensors";
  std::optional<fs::path> newest;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->path().filename() != "best.safetensors" || !it->is_regular_file()) continue;
    if (!newest || fs::last_write_time(it->path()) > fs::last_write_time(*newest)) newest = it->path();
  }
  if (newest) return newest;
  std::optional<fs::path> shipped;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".safetensors") continue;
    if (!shipped || entry.path().filename() < shipped->filename()) shipped = entry.path();
  }
  return shipped;
}

std::string default_weights() {
  std::vector<fs::path> searched;
  // Set, it is what the user chose: no other weights stand in for it unannounced.
  if (const char* env = std::getenv("COVIDRATE_WEIGHTS"); env && *env) {
    if (fs::is_regular_file(env)) return env;
    if (auto found = best_weights_in(env)) return found->string();
    CR_FAIL("segment: $COVIDRATE_WEIGHTS is '" << env << "', which is neither a weights file nor a folder holding "
                                               "one (unset it to use the shipped weights)");
  }
  // build/covidrate -> the source tree's weights/; PREFIX/bin/covidrate ->
  // PREFIX/share/covidrate/weights/ (cmake --install); the current folder's weights/.
  const fs::path exe = fs::read_symlink("/proc/self/exe");
  const fs::path above = exe.parent_path().parent_path();
  for (const fs::path& dir :
       {above / "weights", above / "share" / "covidrate" / "weights", fs::current_path() / "weights"}) {
    if (auto found = best_weights_in(dir)) return found->string();
    searched.push_back(dir);
  }
  std::ostringstream where;
  for (const fs::path& p : searched) where << "\n  " << p.string();
  CR_FAIL("segment: no trained weights found; looked in:" << where.str()
          << "\nTrain them first, e.g. covidrate train --images IMAGES --masks MASKS --out weights/run1"
          << " (docs/segment.md), or pass --weights FILE");
}

// How a finished study's report.json differs from this run's settings (the
// weights, by their hash, and the threshold), or "" when it does not: a batch
// rerun skips finished studies, and should say when they were made otherwise.
std::string settings_differ(const fs::path& report, const data::StudyOptions& now, double threshold) {
  std::ostringstream differ;
  try {
    std::ifstream in(report);
    std::stringstream text;
    text << in.rdbuf();
    const json::Value r = json::parse(text.str());
    const json::Value* weights = r.find("weights");
    const json::Value* hash = weights ? weights->find("fnv1a64") : nullptr;
    if (hash && hash->text != now.weights_hash)
      differ << "weights " << (weights->find("path") ? weights->find("path")->text : hash->text) << ", now "
             << now.weights;
    const json::Value* was = r.find("threshold");
    if (was && was->kind == json::Value::Kind::Number && std::abs(std::stod(was->text) - threshold) > 1e-12)
      differ << (differ.tellp() > 0 ? "; " : "") << "threshold " << was->text << ", now " << threshold;
  } catch (const std::exception&) {
    return "";  // a report this version cannot read: nothing to compare
  }
  return differ.str();
}

// The reader's warnings (slices missing from a series, ...), after the summary
// line; report.json and report.html carry them too.
void print_warnings(const data::RunInfo& run) {
  for (const std::string& w : run.warnings) std::fprintf(stderr, "segment: warning: %s: %s\n", run.study.c_str(), w.c_str());
}

}  // namespace

int cmd_segment(int argc, char** argv) {
  const auto command_start = std::chrono::steady_clock::now();
  SegmentCommandOptions o;
  if (!parse_options(argc, argv, o)) {
    usage(stdout);
    return 0;
  }
  const data::InputPlan plan = data::plan_inputs(o.inputs, o.out);
  for (const std::string& folder : plan.passed_over)
    std::fprintf(stderr, "segment: %s holds no image file, passed over\n", folder.c_str());
  // One run at a time into a folder: before looking at what is there.
  const OutputLock lock("segment", o.out);
  // A single study's folder is never replaced; a batch resumes into its folder.
  CR_CHECK(plan.batch || !fs::exists(o.out), "segment: " << o.out << " already exists; choose another --out");
  check_output_folder("segment", "--out", o.out);
  if (o.weights.empty()) {
    o.weights = default_weights();
  } else if (fs::is_directory(o.weights)) {  // a training run's folder, as $COVIDRATE_WEIGHTS may be
    const std::optional<fs::path> found = best_weights_in(o.weights);
    CR_CHECK(found, "segment: --weights " << o.weights << " is a folder holding no weights (best.safetensors, or "
                                              "*.safetensors)");
    o.weights = found->string();
  }
  if (o.batch == 0) o.batch = default_batch(o.network.device);

  data::StudyOptions study_options;
  study_options.weights_metadata = safetensors::load_metadata(o.weights);
  check_whole_slice_weights(o.weights, study_options.weights_metadata, "segment");
  const ModelSpec spec = resolve_model_spec(o.weights, study_options.weights_metadata, o.network.architecture);
  const std::unique_ptr<SegmentationNet> net = load_for_inference(o.weights, spec, o.network.device, o.network.precision);
  study_options.startup_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - command_start).count();
  study_options.segment = {.threshold = o.threshold,
                           .batch = o.batch,
                           .bucketed_batch_shape = o.network.device == Device::CUDA,  // few cuDNN searches
                           .size = spec.size,
                           .device = o.network.device,
                           .precision = o.network.precision,
                           .crop_margin = o.crop_margin,
                           .progress = {}};
  study_options.save_probability = o.save_probability;
  study_options.save_lungs = o.save_lungs;
  study_options.weights = o.weights;
  study_options.weights_hash = data::file_fnv1a64(o.weights);
  study_options.width = spec.config.width;
  study_options.cpb = spec.config.cpb;
  study_options.se = spec.config.se;
  study_options.architecture = to_string(spec.config.architecture);
  std::fprintf(stderr, "segment: %zu stud%s, weights %s (%s, input %lld), %s, %s\n", plan.studies.size(),
               plan.studies.size() == 1 ? "y" : "ies", o.weights.c_str(), describe(spec.config).c_str(),
               static_cast<long long>(spec.size), to_string(o.network.device), to_string(o.network.precision));
  if (o.network.precision == DType::BF16 && o.network.device == Device::CPU)
    std::fprintf(stderr, "segment: note: bf16 on the CPU is the reference path (each op widens to f32 and rounds "
                         "back), slower than f32; it is there to check GPU results\n");

  if (!plan.batch) {
    Progress progress("segment " + plan.studies[0].name);
    study_options.segment.progress = std::ref(progress);
    const data::StudyResult r = data::run_study(plan.studies[0], *net, study_options, o.out);
    std::printf("%s\n", data::summary_line(r.figures, r.run).c_str());
    print_warnings(r.run);
    return 0;
  }

  fs::create_directories(o.out);
  std::string csv = data::summary_csv_header();
  int failed = 0;
  // Studies still to do (a folder that exists is complete: folders appear only
  // at the end of a study). With --prefetch (the default on a GPU) the next one
  // is read and its lungs extracted on the CPU, and the previous one's folder
  // written, while the network runs the current one.
  std::vector<size_t> todo;
  for (size_t i = 0; i < plan.studies.size(); ++i)
    if (!fs::exists(fs::path(o.out) / plan.studies[i].name)) todo.push_back(i);
  const bool overlap = o.prefetch < 0 ? o.network.device == Device::CUDA : o.prefetch == 1;
  // The batch's progress after each study this run does (done or failed): how
  // many of them, the time a study takes, and when the batch will end.
  const auto batch_start = std::chrono::steady_clock::now();
  size_t finished = 0;
  const auto study_finished = [&] {
    ++finished;
    if (todo.size() < 2 || finished >= todo.size()) return;
    const double each =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - batch_start).count() / finished;
    std::fprintf(stderr, "segment: %zu of %zu studies done%s, %s a study, ETA %s\n", finished, todo.size(),
                 failed > 0 ? (" (" + std::to_string(failed) + " failed)").c_str() : "", duration_text(each).c_str(),
                 duration_text(each * static_cast<double>(todo.size() - finished)).c_str());
  };
  std::future<data::PreparedStudy> next;
  size_t next_todo = 0;  // index into todo of the study `next` prepares
  const auto prepare_next = [&] {
    if (overlap && next_todo < todo.size())
      next = std::async(std::launch::async, data::prepare_study, std::cref(plan.studies[todo[next_todo]]));
  };
  // With the overlap, a study's folder is written while the network runs the
  // next one; one write at a time, its line printed when it is done.
  std::future<data::StudyResult> writing;
  std::string writing_name;
  const auto finish_writing = [&] {
    if (!writing.valid()) return;
    try {
      const data::StudyResult r = writing.get();
      std::printf("%s\n", data::summary_line(r.figures, r.run).c_str());
      std::fflush(stdout);
      print_warnings(r.run);
      csv += data::summary_csv_row(r.figures, r.run);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "segment: %s failed: %s\n", writing_name.c_str(), error_text(e).c_str());
      ++failed;
    }
    study_finished();
  };
  // An error that ends the whole batch (not one study's: those are caught in
  // the loop) still lets the study being written finish and print its line
  // first: its folder is complete either way (the future waits for it).
  struct FinishOnError {
    std::function<void()> finish;
    int exceptions = std::uncaught_exceptions();
    ~FinishOnError() {
      if (std::uncaught_exceptions() == exceptions) return;
      try {
        finish();
      } catch (...) {  // the error on its way out is the one to report
      }
    }
  } finish_on_error{finish_writing};
  prepare_next();
  for (size_t index = 0; index < plan.studies.size(); ++index) {
    const data::StudyInput& study = plan.studies[index];
    const fs::path dir = fs::path(o.out) / study.name;
    // Whether `next` is this study's: it was to do at the start. Its folder may
    // have appeared since (another run into the same --out) or gone (a folder
    // that was only the .tmp of a study named like it); what was read ahead
    // must stay with its own study, never pass to the next one.
    const bool read_ahead = next_todo < todo.size() && todo[next_todo] == index;
    std::future<data::PreparedStudy> mine;
    if (read_ahead) {
      mine = std::move(next);
      ++next_todo;
      prepare_next();  // the following study, while this one runs
    }
    if (fs::exists(dir)) {
      finish_writing();  // keeps the summary's rows in the studies' order
      const std::string other = settings_differ(dir / "report.json", study_options, o.threshold);
      if (other.empty()) {
        std::fprintf(stderr, "segment: %s already done, skipped\n", study.name.c_str());
      } else {
        std::fprintf(stderr, "segment: %s already done with other settings (%s), skipped; remove %s to redo it\n",
                     study.name.c_str(), other.c_str(), dir.string().c_str());
      }
      std::ifstream in(dir / "summary.csv");
      std::string header, row;
      if (std::getline(in, header) && std::getline(in, row)) {
        // A study done by an earlier version has fewer columns (they are only
        // ever added at the end): its row gets empty fields for the new ones.
        const auto columns = [](const std::string& names) { return std::count(names.begin(), names.end(), ','); };
        const auto missing = columns(data::summary_csv_header()) - columns(header);
        csv += row + std::string(static_cast<size_t>(std::max<std::ptrdiff_t>(missing, 0)), ',') + "\n";
      }
      continue;
    }
    try {
      Progress progress("segment " + study.name);
      study_options.segment.progress = std::ref(progress);
      if (overlap) {
        // get() rethrows a read error
        data::SegmentedStudy done = data::segment_study(mine.valid() ? mine.get() : data::prepare_study(study),
                                                        *net, study_options, dir.string());
        finish_writing();  // the study before: its line first, in order
        writing_name = study.name;
        // Its own copy of the options: the loop sets the next study's progress in them.
        data::StudyOptions options = study_options;
        options.segment.progress = nullptr;
        writing = std::async(std::launch::async, [options, done = std::move(done), dir]() mutable {
          return data::write_study(std::move(done), options, dir.string());
        });
        continue;
      }
      const data::StudyResult r = data::run_study(study, *net, study_options, dir.string());
      std::printf("%s\n", data::summary_line(r.figures, r.run).c_str());
      std::fflush(stdout);
      print_warnings(r.run);
      csv += data::summary_csv_row(r.figures, r.run);
      study_finished();
    } catch (const std::exception& e) {
      finish_writing();  // the study before's line first
      // One unreadable study must not cost the others (a covidrate::Error, or
      // a filesystem error such as a symbolic link loop in its folder).
      std::fprintf(stderr, "segment: %s failed: %s\n", study.name.c_str(), error_text(e).c_str());
      ++failed;
      study_finished();
    }
  }
  finish_writing();
  const fs::path summary = fs::path(o.out) / "summary.csv";
  write_text_atomically(summary.string(), csv);
  std::fprintf(stderr, "segment: %zu stud%s, %d failed; summary in %s\n", plan.studies.size(),
               plan.studies.size() == 1 ? "y" : "ies", failed, summary.string().c_str());
  return failed == 0 ? 0 : 1;
}

}  // namespace covidrate::tools
