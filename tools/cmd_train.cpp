// covidrate train: fits COVID-Rate to a folder of slices and lesion masks, or
// cross-validates it with --folds K. The loop itself is model/trainer.h.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/prepare.h"
#include "data/synth_set.h"
#include "model/checkpoint.h"
#include "model/trainer.h"
#include "nn/error.h"
#include "nn/json.h"
#include "nn/text_file.h"
#include "tools/cli.h"

namespace covidrate::tools {

namespace {

namespace fs = std::filesystem;

void usage(FILE* out) {
  std::fprintf(out,
               "usage: covidrate train --images DIR --masks DIR --out DIR [options]\n\n"
               "Trains COVID-Rate (or a baseline, --arch) on image/mask pairs matched by file name\n"
               "(MedSeg layout).\n"
               "DIR/best.safetensors holds the weights of the lowest validation loss,\n"
               "DIR/checkpoint/ the last epoch (for --resume), DIR/log.jsonl one line per epoch,\n"
               "DIR/split.json the slices of each side of the split. DIR must be new or empty unless\n"
               "--resume continues the run it holds; a run that cannot start writes nothing.\n\n"
               "  --arch NAME       covid-rate (default), unet, attention-unet or unet++ (the baselines)\n"
               "  --width W         channel width multiplier (default 1: the paper's network)\n"
               "  --size S          network input side, a multiple of 16 (default 512)\n"
               "  --batch B         mini-batch size (default 4)\n"
               "  --epochs E        at most E epochs (default 100)\n"
               "  --patience P      stop after P epochs without a lower validation loss (default 10)\n"
               "  --val-fraction F  share of the slices held out for validation, in (0, 0.95] (default 0.2):\n"
               "                    the validation loss chooses the best weights and stops the run early\n"
               "                    (not with --folds or --split, which choose the validation slices)\n"
               "  --folds K         K-fold cross-validation: DIR/fold-1 .. fold-K and DIR/folds.json\n"
               "  --seed N          seeds the weights, the split, the shuffles, the augmentation (default 0)\n"
               "  --deterministic   record the CPU thread count and refuse to resume under another\n"
               "  --resume          continue the run in DIR from its last checkpoint (with --folds: the\n"
               "                    cross-validation in DIR, each fold from its own checkpoint)\n"
               "  --device D        cpu or cuda (default: $COVIDRATE_DEVICE, else cpu)\n"
               "  --no-cpb          COVID-Rate without context perception boosting\n"
               "  --no-se           COVID-Rate without squeeze-and-excitation (with CPB: the paper's\n"
               "                    \"Residual U-Net with CPB\")\n"
               "  --loss L          hybrid (default), wbce or ftl\n"
               "  --pos-weight X    weight of lesion pixels in the BCE term: 1 + X (default %.0f)\n"
               "  --lungs           zero everything outside the lungs (classical lung extraction)\n"
               "  --lr X            Adam's learning rate (default 0.001)\n"
               "  --decay X         Keras' learning-rate decay: lr / (1 + X * step) (default 4e-4, the\n"
               "                    reference code's; the shipped weights were trained with lr / 100)\n"
               "  --no-augment      train on the slices as they are\n"
               "  --keras-bn        validate with BN's momentum averages as Keras does, not with\n"
               "                    statistics recomputed on the training slices each epoch\n"
               "  --synthetic DIR   also train on DIR/images + DIR/masks ('covidrate synth'): added to the\n"
               "                    training side of every split, never validated on; a pair whose lesions\n"
               "                    come from a validation slice (DIR/sources.json) is left out of that split\n"
               "  --pseudo DIR      also train on the pseudo-labelled pairs of 'covidrate pseudo-label' (DIR/images\n"
               "                    + DIR/masks): unsupervised enhancement, training side only, like --synthetic\n"
               "  --split FILE      train and validate on the slices a split.json names (an earlier\n"
               "                    run's), instead of a fresh seeded split\n"
               "  --init FILE       start from these weights (same architecture): fine-tuning\n",
               kDefaultPosWeight);
}

// A number for JSON and messages; null when there is none (NaN).
std::string json_text(double v) {
  if (!std::isfinite(v)) return "null";
  char text[32];
  std::snprintf(text, sizeof text, "%.6g", v);
  return text;
}

struct Settings {
  std::string images, masks, out;
  std::string synthetic, pseudo, split_file;
  TrainOptions train;
  double val_fraction = 0.2;
  int folds = 0;
  bool lungs = false;
  bool decay_given = false;
  bool val_fraction_given = false;
  // Set by check_run_folder: the folder of a run stopped before its first
  // epoch ended (--out, or with --folds its fold-1/), which this run replaces.
  std::string restart;
};

Settings parse(int argc, char** argv) {
  Settings s;
  bool device_given = false;  // else $COVIDRATE_DEVICE, read after the line (so --help always works)
  ArgScanner args(argc, argv);
  while (args.next()) {
    const std::string& a = args.current();
    const auto value = [&] { return args.value(); };
    if (a == "--images") s.images = value();
    else if (a == "--masks") s.masks = value();
    else if (a == "--out") s.out = args.folder_value();
    else if (a == "--width") s.train.model.width = parse_number(a, value(), 1e-3, 4);
    else if (a == "--size") s.train.size = parse_integer(a, value(), 16, 4096);
    else if (a == "--batch") s.train.batch = parse_integer(a, value(), 1, 4096);
    else if (a == "--epochs") s.train.epochs = static_cast<int>(parse_integer(a, value(), 1, 1000000));
    else if (a == "--patience") s.train.patience = static_cast<int>(parse_integer(a, value(), 1, 1000000));
    else if (a == "--val-fraction") {
      // Not 0: the validation slices choose the best weights and stop the run early.
      const std::string text = value();
      s.val_fraction = parse_number(a, text);
      CR_USAGE_CHECK(s.val_fraction > 0 && s.val_fraction <= 0.95,
                     "--val-fraction needs a number in (0, 0.95], got '" << text << "'");
      s.val_fraction_given = true;
    }
    else if (a == "--folds") s.folds = static_cast<int>(parse_integer(a, value(), 2, 1000));
    else if (a == "--seed") s.train.seed = static_cast<uint64_t>(parse_integer(a, value(), 0, kMaxSeed));
    else if (a == "--deterministic") s.train.deterministic = true;
    else if (a == "--resume") s.train.resume = true;
    else if (a == "--no-cpb") s.train.model.cpb = false;
    else if (a == "--no-se") s.train.model.se = false;
    else if (a == "--arch") {
      const std::string name = value();
      try {
        s.train.model.architecture = parse_architecture(name);
      } catch (const Error& e) {
        throw UsageError(std::string("--arch: ") + e.what());
      }
    }
    else if (a == "--lungs") s.lungs = true;
    else if (a == "--synthetic") s.synthetic = value();
    else if (a == "--pseudo") s.pseudo = value();
    else if (a == "--split") s.split_file = value();
    else if (a == "--init") s.train.init_weights = value();
    else if (a == "--no-augment") s.train.augment = false;
    else if (a == "--keras-bn") s.train.precise_bn = false;
    else if (a == "--pos-weight") s.train.pos_weight = parse_number(a, value(), 0, 1e6);
    else if (a == "--lr") s.train.adam.lr = parse_number(a, value(), 1e-12, 10);
    else if (a == "--decay") {
      s.train.adam.decay = parse_number(a, value(), 0, 1e6);
      s.decay_given = true;
    } else if (a == "--loss") {
      const std::string name = value();
      if (name != "hybrid" && name != "wbce" && name != "ftl")
        throw UsageError("--loss expects hybrid, wbce or ftl, got '" + name + "'");
      s.train.loss = parse_loss_kind(name);
    } else if (a == "--device") {
      const std::string name = value();
      s.train.device = parse_device_option(a, name);
      device_given = true;
    } else {
      args.unknown();
    }
  }
  if (!device_given) s.train.device = default_device();
  if (s.images.empty() || s.masks.empty() || s.out.empty())
    throw UsageError("--images, --masks and --out are required");
  if (!s.split_file.empty() && s.folds > 0) throw UsageError("--split and --folds exclude each other");
  // Both choose the validation slices themselves: a fraction given beside them would be ignored.
  CR_USAGE_CHECK(!(s.val_fraction_given && s.folds > 0),
                 "--val-fraction does not apply with --folds: each fold validates on its own 1/K of the slices");
  CR_USAGE_CHECK(!(s.val_fraction_given && !s.split_file.empty()),
                 "--val-fraction does not apply with --split: the split file says which slices validate");
  if (s.train.model.architecture != Architecture::CovidRate && !(s.train.model.cpb && s.train.model.se))
    throw UsageError(std::string("--no-cpb and --no-se are COVID-Rate's; ") + to_string(s.train.model.architecture) +
                     " has neither");
  if (s.train.size % 16 != 0) throw UsageError("--size must be a multiple of 16, got " + std::to_string(s.train.size));
  // The reference code's Adam(learning_rate=0.001, decay=0.0004): a step count,
  // so it does not follow --lr or --epochs (a run resumed with a higher --epochs
  // keeps its schedule).
  if (!s.decay_given) s.train.adam.decay = kReferenceDecay;
  s.train.model.seed = s.train.seed;
  return s;
}

std::string names_json(const data::Dataset& set, const std::vector<int64_t>& indices) {
  std::string out = "[";
  for (size_t i = 0; i < indices.size(); ++i)
    out += (i ? ", " : "") + json::quote(set.samples[static_cast<size_t>(indices[i])].name);
  return out + "]";
}

// A pair for the training side only: a synthetic or a pseudo-labelled slice.
struct ExtraPair {
  data::PreparedSlice slice;
  std::string lesions_from;  // a synthetic pair's: the labelled slice its lesions come from ("" if unknown)
};

std::vector<data::PreparedSlice> pick(const std::vector<data::PreparedSlice>& all, const std::vector<int64_t>& idx) {
  std::vector<data::PreparedSlice> out;
  for (int64_t i : idx) out.push_back(all[static_cast<size_t>(i)]);
  return out;
}

// A folder a run left when it stopped before its first checkpoint was saved:
// the trainer creates the folder, writes split.json and an empty log.jsonl,
// and at the end of epoch 1 best.safetensors, the log's first line, curves.svg
// and last checkpoint/ (built as checkpoint.tmp/); a kill or a full disk may
// also leave a writer's temporary (NAME.tmp-PID-N). Without checkpoint/ (or
// checkpoint.old/) nothing can be resumed, so a folder holding a log.jsonl of
// at most that first epoch's line and nothing but those holds nothing of
// value: a new run, with or without --resume, starts afresh into it. A longer
// log (a finished run whose checkpoint was deleted), a checkpoint, or any
// other file: not this.
bool interrupted_start(const fs::path& dir) {
  std::error_code error;
  if (!fs::is_directory(dir, error)) return false;
  bool log = false;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name == "checkpoint.tmp" && fs::is_directory(entry.symlink_status())) continue;
    if (!fs::is_regular_file(entry.symlink_status())) return false;
    if (name == "log.jsonl") {
      std::ifstream in(entry.path());
      const auto lines = std::count(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), '\n');
      if (lines > 1) return false;
      log = true;
    }
    else if (name != "split.json" && name != "best.safetensors" && name != "curves.svg" && !is_writer_temporary(name))
      return false;
  }
  return log;
}

// True when `dir` holds exactly one entry, `name`.
bool holds_only(const fs::path& dir, const char* name) {
  int count = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir))
    if (++count > 1 || entry.path().filename() != name) return false;
  return count == 1;
}

// The output folder, checked before any data is read or anything written.
// Without --resume it must be new or empty: the files of an earlier run (or of
// anything else) would mix with the new run's. With --resume it must hold what
// is resumed: a checkpoint, or with --folds an earlier cross-validation's fold-1/
// (its folds resume each from its own checkpoint, or start afresh). Either way
// an interrupted start (above; with --folds: a folder holding only such a
// fold-1/) is taken as new: s.restart names it, and s.train.resume is cleared.
void check_run_folder(Settings& s) {
  const fs::path out(s.out);
  const fs::path restart = s.folds > 0 ? out / "fold-1" : out;
  if (fs::is_directory(out) && (s.folds == 0 || holds_only(out, "fold-1")) && interrupted_start(restart)) {
    s.restart = restart.string();
    s.train.resume = false;
    return;
  }
  const bool cross_validation = fs::is_directory(out / "fold-1");
  if (s.train.resume) {
    if (s.folds > 0)
      CR_CHECK(cross_validation,
               "train --resume: " << s.out << " holds no fold-1/ of an earlier cross-validation"
                                  << (checkpoint_exists(s.out) ? " (it holds a single run: resume it without --folds)"
                                                               : ""));
    else
      CR_CHECK(checkpoint_exists(s.out),
               "train --resume: " << s.out << " holds no checkpoint to continue"
                                  << (cross_validation ? " (it holds a cross-validation: resume it with its --folds K)"
                                                       : "; a run saves one after each epoch. Start afresh in a new or "
                                                         "empty --out"));
    return;
  }
  if (!fs::exists(out)) return;
  CR_CHECK(fs::is_directory(out), "train: " << s.out << " exists and is not a folder; choose another --out");
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : fs::directory_iterator(out))
    names.push_back(entry.path().filename().string());
  if (names.empty()) return;
  // The file to name: a training run's own first.
  for (const char* own : {"log.jsonl", "best.safetensors", "checkpoint", "checkpoint.old", "folds.json", "fold-1",
                          "split.json", "curves.svg"})
    CR_CHECK(std::find(names.begin(), names.end(), own) == names.end(),
             "train: " << s.out << " already holds " << own << " from an earlier run; pass --resume to continue "
                       << "that run or choose another --out");
  std::sort(names.begin(), names.end());
  CR_FAIL("train: " << s.out << " already holds " << names[0]
                    << (names.size() > 1 ? " and " + std::to_string(names.size() - 1) + " more" : std::string())
                    << "; choose another --out (a new or empty folder)");
}

// An epoch's progress on stderr, from the trainer's counts. The steps go through
// Progress (eval's and segment's): images done / total, images/s and the ETA of
// the epoch's steps, in place on a terminal, a line per quarter in a log. On a
// terminal the line also shows as the epoch begins (a step of the full-size
// network takes tens of seconds on a few cores), and precise BN and validation
// show in place after it until the epoch's line on stdout replaces them; a log
// gets the steps' lines only.
class EpochProgress {
 public:
  EpochProgress(std::string prefix, int epochs) : prefix_(std::move(prefix)), epochs_(epochs) {}
  EpochProgress(const EpochProgress&) = delete;
  EpochProgress& operator=(const EpochProgress&) = delete;
  // A run stopped by an error: its message starts on a line of its own.
  ~EpochProgress() {
    if (open_) std::fputs("\n", stderr);
  }

  void operator()(const TrainProgress& p) {
    const bool steps = p.stage == TrainProgress::Stage::Steps;
    if (!steps && !tty_) return;
    if (p.done == 0) {
      const std::string what = prefix_ + "epoch " + std::to_string(p.epoch) + "/" + std::to_string(epochs_) +
                               (steps ? "" : " validating");
      const char* unit = steps ? "images" : "slices";
      progress_.emplace(what, unit);
      (*progress_)(0, p.total);
      if (tty_ && p.total >= 2) {
        std::fprintf(stderr, "\r\033[K%s: 0/%lld %s", what.c_str(), static_cast<long long>(p.total), unit);
        std::fflush(stderr);
        open_ = true;
      }
    } else if (!steps && p.done >= p.total) {
      std::fputs("\r\033[K", stderr);  // the epoch's line takes its place
      std::fflush(stderr);
      open_ = false;
    } else if (progress_) {
      (*progress_)(p.done, p.total);  // ends the steps' terminal line at done == total
      open_ = tty_ && p.done < p.total && p.total >= 2;
    }
  }

 private:
  std::string prefix_;
  int epochs_;
  bool tty_ = ::isatty(::fileno(stderr));
  bool open_ = false;  // a terminal line without its newline
  std::optional<Progress> progress_;
};

TrainResult run_one(const data::Dataset& set, const std::vector<data::PreparedSlice>& prepared,
                    const data::Split& split, const std::vector<ExtraPair>& extra,
                    TrainOptions options, const std::string& out_dir, const std::string& progress_prefix = "",
                    bool restart = false) {
  options.out_dir = out_dir;
  std::vector<data::PreparedSlice> train_side = pick(prepared, split.train);
  // A synthetic pair that holds the lesions of a validation slice would show the
  // network the very lesions it is scored on: left out (each fold its own).
  std::set<std::string> validation_names;
  for (const int64_t i : split.validation) validation_names.insert(set.samples[static_cast<size_t>(i)].name);
  size_t extra_kept = 0, left_out = 0;
  for (const ExtraPair& e : extra) {
    if (validation_names.count(e.lesions_from)) {
      ++left_out;
      continue;
    }
    train_side.push_back(e.slice);
    ++extra_kept;
  }
  // Written once the trainer has checked everything it can (the init weights, the checkpoint) and made the folder.
  options.on_start = [&] {
    // Said once everything has been checked: the run does start.
    if (restart)
      std::fprintf(stderr, "%s: an earlier run stopped before its first checkpoint; starting afresh\n",
                   out_dir.c_str());
    if (left_out > 0)
      std::printf("left out %zu synthetic pair%s whose lesions come from the validation slices\n", left_out,
                  left_out == 1 ? "" : "s");
    write_text_atomically((fs::path(out_dir) / "split.json").string(),
                          "{\"train\": " + names_json(set, split.train) + ",\n \"validation\": " +
                              names_json(set, split.validation) + "}\n");
    std::printf("training %s on %zu slices (%zu synthetic or pseudo-labelled), validating on %zu, %s -> %s\n",
                describe(options.model).c_str(), train_side.size(), extra_kept, split.validation.size(),
                to_string(options.device), out_dir.c_str());
    std::fflush(stdout);
  };
  EpochProgress progress(progress_prefix, options.epochs);
  options.on_progress = [&](const TrainProgress& p) { progress(p); };
  return train(train_side, pick(prepared, split.validation), options, [](const EpochRecord& r) {
    std::printf("epoch %d: train loss %.4f, val loss %.4f, val Dice %.4f, lr %.3g, %.1f s, %.2f images/s\n",
                r.epoch, r.train_loss, r.val_loss, r.val_dice, r.lr, r.seconds, r.images_per_second);
    std::fflush(stdout);
    return true;
  });
}

// The split an earlier run wrote (split.json: {"train": [names], "validation": [names]}),
// as indices into `set`; every name must be one of its slices, and none on both sides.
data::Split read_split(const std::string& path, const data::Dataset& set) {
  const data::SplitNames names = data::read_split_names(path);
  std::map<std::string, int64_t> index;
  for (int64_t i = 0; i < set.size(); ++i) index[set.samples[static_cast<size_t>(i)].name] = i;
  data::Split split;
  std::vector<int> side(static_cast<size_t>(set.size()), 0);
  for (const auto& [list, out, mark] : {std::tuple{&names.train, &split.train, 1}, std::tuple{&names.validation, &split.validation, 2}}) {
    for (const std::string& name : *list) {
      const auto found = index.find(name);
      CR_CHECK(found != index.end(), "train: " << path << " names slice '" << name << "', which is not in the images folder");
      CR_CHECK(side[static_cast<size_t>(found->second)] == 0, "train: " << path << " names slice '" << name << "' twice");
      side[static_cast<size_t>(found->second)] = mark;
      out->push_back(found->second);
    }
  }
  CR_CHECK(!split.train.empty(), "train: " << path << " names no training slice");
  CR_CHECK(!split.validation.empty(), "train: " << path << " names no validation slice (the validation loss "
                                                   "chooses the best weights and stops the run early)");
  return split;
}

void mean_std(const std::vector<double>& v, double& mean, double& std) {
  mean = 0;
  for (double x : v) mean += x;
  mean /= static_cast<double>(v.size());
  double squares = 0;
  for (double x : v) squares += (x - mean) * (x - mean);
  std = v.size() > 1 ? std::sqrt(squares / static_cast<double>(v.size() - 1)) : 0.0;  // sample std
}

int cross_validate(const Settings& s, const data::Dataset& set, const std::vector<data::PreparedSlice>& prepared,
                   const std::vector<ExtraPair>& extra) {
  const std::vector<data::Split> splits = data::k_fold_splits(set.size(), s.folds, s.train.seed);
  std::vector<double> losses, dices;
  std::string rows;
  for (int f = 0; f < s.folds; ++f) {
    std::printf("fold %d/%d\n", f + 1, s.folds);
    const std::string fold_dir = (fs::path(s.out) / ("fold-" + std::to_string(f + 1))).string();
    TrainOptions options = s.train;
    // A cross-validation killed in fold f resumes fold f; later folds start afresh.
    options.resume = s.train.resume && checkpoint_exists(fold_dir);
    // A fold folder without a checkpoint, of a fold killed in its first epoch, is replaced.
    const bool restart = (f == 0 && !s.restart.empty()) ||
                         (s.train.resume && !options.resume && fs::exists(fold_dir) && !fs::is_empty(fold_dir));
    const TrainResult r = run_one(set, prepared, splits[f], extra, options, fold_dir,
                                  "fold " + std::to_string(f + 1) + "/" + std::to_string(s.folds) + ", ", restart);
    losses.push_back(r.best_val_loss);
    dices.push_back(r.best_val_dice);
    rows += std::string(f ? ",\n  " : "  ") + "{\"fold\": " + std::to_string(f + 1) + ", \"best_epoch\": " +
            std::to_string(r.best_epoch) + ", \"val_loss\": " + json_text(r.best_val_loss) +
            ", \"val_dice\": " + json_text(r.best_val_dice) + "}";
  }
  double loss_mean, loss_std, dice_mean, dice_std;
  mean_std(losses, loss_mean, loss_std);
  mean_std(dices, dice_mean, dice_std);
  std::printf("\n%-6s %10s %10s\n", "fold", "val loss", "val Dice");
  for (int f = 0; f < s.folds; ++f) std::printf("%-6d %10.4f %10.4f\n", f + 1, losses[f], dices[f]);
  std::printf("%-6s %4.4f ± %.4f %4.4f ± %.4f\n", "mean", loss_mean, loss_std, dice_mean, dice_std);
  write_text_atomically((fs::path(s.out) / "folds.json").string(),
                   "{\"folds\": [\n" + rows + "\n ],\n \"val_loss\": {\"mean\": " + json_text(loss_mean) +
                       ", \"std\": " + json_text(loss_std) + "},\n \"val_dice\": {\"mean\": " + json_text(dice_mean) +
                       ", \"std\": " + json_text(dice_std) + "}}\n");
  std::printf("wrote %s\n", (fs::path(s.out) / "folds.json").string().c_str());
  return 0;
}

}  // namespace

// Ctrl-C or a kill: one line saying that the run can go on from its last
// finished epoch, then the signal's default action (the exit status says which
// signal). The message is made beforehand: a handler may only write(2).
char resume_message[4096];
size_t resume_message_size = 0;
extern "C" void on_stop_signal(int signal) {
  ssize_t ignored = ::write(STDERR_FILENO, resume_message, resume_message_size);
  (void)ignored;
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}
void say_how_to_resume_when_stopped(const std::string& out) {
  const std::string text = "\ntrain: stopped; " + out +
                           " keeps the last finished epoch (if any): run the same command with --resume to go on\n";
  resume_message_size = std::min(text.size(), sizeof resume_message);
  std::memcpy(resume_message, text.data(), resume_message_size);
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

int cmd_train(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      usage(stdout);
      return 0;
    }
  Settings s = parse(argc, argv);
  const OutputLock lock("train", s.out);  // a second run (a --resume) into the folder would write over this one's
  check_output_folder("train", "--out", s.out);
  check_run_folder(s);
  s.train.lungs_only = s.lungs;
  say_how_to_resume_when_stopped(s.out);
  const data::Dataset set = data::load_dataset(s.images, s.masks, {.lungs = s.lungs});
  std::vector<data::PreparedSlice> prepared;
  for (const data::Sample& sample : set.samples) prepared.push_back(data::prepare_sample(sample, s.train.size));
  std::printf("%lld slices from %s, prepared at %lld x %lld%s\n", static_cast<long long>(set.size()),
              s.images.c_str(), static_cast<long long>(s.train.size), static_cast<long long>(s.train.size),
              s.lungs ? ", lungs only" : "");
  // Extra pairs for the training side only: synthetic lesions, then pseudo-labels.
  std::vector<ExtraPair> extra;
  for (const auto& [dir, what] : {std::pair{s.synthetic, "synthetic"}, std::pair{s.pseudo, "pseudo-labelled"}}) {
    if (dir.empty()) continue;
    const size_t before = extra.size();
    const data::Dataset pairs =
        data::load_dataset((fs::path(dir) / "images").string(), (fs::path(dir) / "masks").string(), {.lungs = s.lungs});
    std::optional<std::map<std::string, std::string>> sources;
    if (std::string(what) == "synthetic") {
      sources = data::read_synthetic_sources(dir);
      if (!sources)
        std::fprintf(stderr, "train: %s has no sources.json (made by hand, or by an older covidrate synth), so "
                     "whether its lesions come from validation slices cannot be checked\n", dir.c_str());
    }
    if (sources) {
      // Names that match none of --images' slices leave nothing to leave out:
      // the set was made from another copy, or renamed ones.
      std::set<std::string> names;
      for (const data::Sample& sample : set.samples) names.insert(sample.name);
      const bool any = std::any_of(sources->begin(), sources->end(),
                                   [&](const auto& source) { return names.count(source.second) > 0; });
      if (!any && !sources->empty())
        std::fprintf(stderr, "train: %s/sources.json names none of the slices in %s, so no pair can be left out for "
                     "its validation slices: was it made from these slices (synth --train)?\n", dir.c_str(),
                     s.images.c_str());
    }
    for (const data::Sample& sample : pairs.samples) {
      std::string lesions_from;
      if (sources) {
        const auto found = sources->find(sample.name);
        CR_CHECK(found != sources->end(), "train: " << (fs::path(dir) / "sources.json").string() << " does not say "
                                                    << "where pair '" << sample.name << "' comes from");
        lesions_from = found->second;
      }
      extra.push_back({data::prepare_sample(sample, s.train.size), lesions_from});
    }
    std::printf("%zu %s slices from %s, for training only\n", extra.size() - before, what, dir.c_str());
  }
  if (s.folds > 0) {
    CR_CHECK(s.folds <= set.size(), "train: " << s.folds << " folds but only " << set.size() << " slices");
    return cross_validate(s, set, prepared, extra);
  }
  const data::Split split = s.split_file.empty()
                                ? data::train_validation_split(set.size(), s.val_fraction, s.train.seed)
                                : read_split(s.split_file, set);
  CR_CHECK(!split.validation.empty(), "train: " << set.size() << " slice in " << s.images
                                                << ": none is left to validate on; train needs at least 2");
  const TrainResult r = run_one(set, prepared, split, extra, s.train, s.out, "", !s.restart.empty());
  std::printf("best epoch %d: val loss %.4f, val Dice %.4f%s; weights in %s\n", r.best_epoch, r.best_val_loss,
              r.best_val_dice, r.stopped_early ? " (stopped early)" : "",
              (fs::path(s.out) / "best.safetensors").string().c_str());
  return 0;
}

}  // namespace covidrate::tools
