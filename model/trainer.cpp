#include "model/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <sstream>

#include "kernels/cpu/threads.h"
#include "model/checkpoint.h"
#include "model/training_curves.h"
#include "nn/adam.h"
#include "nn/json.h"
#include "nn/text_file.h"

namespace covidrate {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Slices `indices` of `set` stacked into [B, 1, S, S] image and mask tensors on
// `device`, each transformed by a fresh random augmentation when `rng` is given.
void make_batch(const std::vector<data::PreparedSlice>& set, const std::vector<int64_t>& indices,
                int64_t size, const data::AugmentOptions* augmentation, std::mt19937_64* rng, Device device,
                Tensor& images, Tensor& masks) {
  const int64_t pixels = size * size, n = static_cast<int64_t>(indices.size());
  std::vector<float> image_data(static_cast<size_t>(n * pixels)), mask_data(image_data.size());
  for (int64_t b = 0; b < n; ++b) {
    const data::PreparedSlice& s = set[static_cast<size_t>(indices[b])];
    float* image_out = image_data.data() + b * pixels;
    float* mask_out = mask_data.data() + b * pixels;
    if (augmentation) {
      const data::AffineTransform t = data::random_transform(*augmentation, size, *rng);
      data::apply_transform(t, size, s.image.data(), image_out, s.mask.data(), mask_out);
    } else {
      std::copy(s.image.begin(), s.image.end(), image_out);
      std::copy(s.mask.begin(), s.mask.end(), mask_out);
    }
  }
  const Shape shape{n, 1, size, size};
  images = Tensor::from_vector(shape, image_data).to(device);
  masks = Tensor::from_vector(shape, mask_data).to(device);
}

// Fisher-Yates by hand rather than std::shuffle, whose algorithm the standard
// leaves to the library: the same seed must give the same order on any
// standard library, or a resumed run would not be the run it resumes. (The
// modulo's bias is below 1e-17 for these counts.)
std::vector<int64_t> shuffled(int64_t count, std::mt19937_64& rng) {
  std::vector<int64_t> order(static_cast<size_t>(count));
  std::iota(order.begin(), order.end(), 0);
  for (int64_t i = count - 1; i > 0; --i) std::swap(order[i], order[rng() % static_cast<uint64_t>(i + 1)]);
  return order;
}

// A JSON number, or null for NaN (no validation set: no validation Dice).
std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  std::ostringstream os;
  os.precision(9);
  os << v;
  return os.str();
}

std::string log_line(const EpochRecord& r) {
  return "{\"epoch\": " + std::to_string(r.epoch) + ", \"train_loss\": " + json_number(r.train_loss) +
         ", \"val_loss\": " + json_number(r.val_loss) + ", \"val_dice\": " + json_number(r.val_dice) +
         ", \"lr\": " + json_number(r.lr) + ", \"seconds\": " + json_number(r.seconds) +
         ", \"images_per_second\": " + json_number(r.images_per_second) + "}\n";
}

double log_number(const json::Value& line, const char* key) {
  const json::Value* v = line.find(key);
  if (!v || v->kind != json::Value::Kind::Number) return std::numeric_limits<double>::quiet_NaN();
  return std::stod(v->text);
}

}  // namespace

std::vector<EpochRecord> read_training_log(const std::string& path) {
  std::vector<EpochRecord> records;
  std::ifstream in(path);
  CR_CHECK(in, "cannot read " << path);
  int line_number = 0;
  for (std::string text; std::getline(in, text);) {
    ++line_number;
    if (text.empty()) continue;
    json::Value line;
    try {
      line = json::parse(text);
    } catch (const Error& e) {
      CR_FAIL(path << ", line " << line_number << ": not a training log record (" << e.what() << ")");
    }
    EpochRecord r;
    const double epoch = log_number(line, "epoch");
    CR_CHECK(std::isfinite(epoch) && epoch >= 1 && epoch < 1e9,
             path << ", line " << line_number << ": no epoch number in the record");
    r.epoch = static_cast<int>(epoch);
    r.train_loss = log_number(line, "train_loss");
    r.val_loss = log_number(line, "val_loss");
    r.val_dice = log_number(line, "val_dice");
    r.lr = log_number(line, "lr");
    r.seconds = log_number(line, "seconds");
    r.images_per_second = log_number(line, "images_per_second");
    CR_CHECK(records.empty() || r.epoch > records.back().epoch,
             path << ", line " << line_number << ": epoch " << r.epoch << " follows epoch " << records.back().epoch);
    records.push_back(r);
  }
  return records;
}

namespace {

// Cuts the log back to what the checkpoint knew: lines of an epoch that was
// killed before its checkpoint are dropped, so each epoch appears once.
void truncate_log(const std::string& path, uint64_t bytes) {
  if (!fs::exists(path)) {
    CR_CHECK(bytes == 0, "train --resume: " << path << " is missing");
    write_text_atomically(path, "");
    return;
  }
  CR_CHECK(fs::file_size(path) >= bytes, "train --resume: " << path << " is shorter than its checkpoint says");
  fs::resize_file(path, bytes);
}

// Appends a line and returns the log's new length. Every write and the close
// are checked: a full disk stops training with the file and the reason.
uint64_t append_log(const std::string& path, const std::string& line) {
  try {
    return append_to_file(path, line);
  } catch (const Error& e) {
    CR_FAIL("train: " << e.what());
  }
}

// What must match between a checkpoint and the run that resumes it: anything
// that changes the arithmetic (the epoch limit and patience may change).
std::string fingerprint(const TrainOptions& o, const std::vector<data::PreparedSlice>& train_set,
                        const std::vector<data::PreparedSlice>& validation) {
  std::ostringstream os;
  os.precision(17);
  os << "width " << o.model.width << " cpb " << o.model.cpb << " init_seed " << o.model.seed << " size "
     << o.size << " batch " << o.batch << " lr " << o.adam.lr << " decay " << o.adam.decay << " loss "
     << to_string(o.loss) << " pos_weight " << o.pos_weight << " augment " << o.augment << " precise_bn " << o.precise_bn << " seed " << o.seed
     << " init '" << o.init_weights << "' train " << train_set.size() << " validation " << validation.size();
  // Only when not COVID-Rate with SE: checkpoints written before the baselines existed still resume.
  if (o.model.architecture != Architecture::CovidRate || !o.model.se)
    os << " architecture " << to_string(o.model.architecture) << " se " << o.model.se;
  // The data itself, cheaply: a weighted sum over every 7th prepared pixel and its
  // mask. It catches other slices, other masks or another preparation of the
  // same slices (the weight i % 13 + 1 depends on the position), not a change
  // confined to pixels the stride skips. `data` sums both sides, so it cannot
  // tell which slice is on which; `validation_data` is the validation side's
  // alone, weighted by each slice's place, so that a resume with another split
  // of the same slices (another --split, --folds or --val-fraction) is refused:
  // it would train on slices the run had validated on, and the reverse.
  // `data` is summed pixel by pixel in the order it always was, so that a
  // checkpoint written before `validation_data` existed still matches it.
  double checksum = 0, validation_checksum = 0;
  for (const auto* set : {&train_set, &validation})
    for (size_t k = 0; k < set->size(); ++k) {
      const data::PreparedSlice& s = (*set)[k];
      double slice_sum = 0;
      for (size_t i = 0; i < s.image.size(); i += 7) {
        const double term = s.image[i] * static_cast<double>(i % 13 + 1) + s.mask[i];
        checksum += term;
        slice_sum += term;
      }
      if (set == &validation) validation_checksum += slice_sum * static_cast<double>(k % 7 + 1);
    }
  // New fields go at the end (load_checkpoint holds an older checkpoint to the fields it has).
  os << " data " << checksum << " validation_data " << validation_checksum;
  return os.str();
}

// The parts of a fingerprint: "key value" pairs, the --init path quoted ('...').
std::map<std::string, std::string> fingerprint_fields(const std::string& text) {
  std::map<std::string, std::string> fields;
  size_t at = 0;
  while (at < text.size()) {
    const size_t key_end = text.find(' ', at);
    if (key_end == std::string::npos) break;
    const size_t begin = key_end + 1;
    size_t end = begin < text.size() && text[begin] == '\'' ? text.find("' ", begin + 1) : text.find(' ', begin);
    if (end != std::string::npos && text[begin] == '\'') ++end;  // the closing quote is the value's
    if (end == std::string::npos) end = text.size();
    fields[text.substr(at, key_end - at)] = text.substr(begin, end - begin);
    at = end + 1;
  }
  // Written only for other networks than COVID-Rate with SE (see fingerprint).
  fields.try_emplace("architecture", to_string(Architecture::CovidRate));
  fields.try_emplace("se", "1");
  return fields;
}

// Two numbers of a fingerprint as a person reads them: 6 significant digits,
// more only where those do not tell them apart.
std::pair<std::string, std::string> rounded(const std::string& a, const std::string& b) {
  const auto format = [](const std::string& text, int digits) {
    char out[40];
    try {
      std::snprintf(out, sizeof out, "%.*g", digits, std::stod(text));
    } catch (const std::exception&) {
      return text;
    }
    return std::string(out);
  };
  std::pair<std::string, std::string> r{format(a, 6), format(b, 6)};
  if (r.first == r.second) r = {format(a, 17), format(b, 17)};
  return r;
}

// How a checkpoint's fingerprint differs from the run's, by command-line
// option: "--width was 0.05, now 0.0625; --seed was 1, now 2". Empty when the
// texts differ in no part it knows (load_checkpoint then shows both).
std::string fingerprint_difference(const std::string& saved, const std::string& now) {
  std::map<std::string, std::string> was = fingerprint_fields(saved), is = fingerprint_fields(now);
  std::vector<std::string> out;
  std::set<std::string> told;
  const auto differs = [&](const std::string& key) { return was[key] != is[key]; };
  const auto say = [&](const std::string& key, const std::string& what, const std::string& a, const std::string& b) {
    out.push_back(what + " was " + a + ", now " + b);
    told.insert(key);
  };
  const auto text = [&](const std::string& key, const std::string& option) {
    if (differs(key)) say(key, option, was[key], is[key]);
  };
  const auto number = [&](const std::string& key, const std::string& option) {
    if (!differs(key)) return;
    const auto [a, b] = rounded(was[key], is[key]);
    say(key, option, a, b);
  };
  const auto flag = [&](const std::string& key, const std::string& what, const std::string& option) {
    const auto state = [](const std::string& v) { return std::string(v == "0" ? "off" : "on"); };
    if (differs(key)) say(key, what, state(was[key]), state(is[key]) + " (" + option + ")");
  };
  const auto slices = [&](const std::string& key, const std::string& side) {
    const auto count = [](const std::string& n) { return n + (n == "1" ? " slice" : " slices"); };
    if (differs(key)) say(key, "the " + side + " side", count(was[key]), count(is[key]));
  };
  text("architecture", "--arch");
  number("width", "--width");
  flag("cpb", "context perception boosting", "--no-cpb");
  flag("se", "squeeze-and-excitation", "--no-se");
  text("size", "--size");
  text("batch", "--batch");
  number("lr", "--lr");
  number("decay", "--decay");
  text("loss", "--loss");
  number("pos_weight", "--pos-weight");
  flag("augment", "augmentation", "--no-augment");
  flag("precise_bn", "precise BN", "--keras-bn");
  text("seed", "--seed");
  if (told.count("seed") == 0) text("init_seed", "the weights' seed");
  told.insert("init_seed");
  if (differs("init")) {
    const auto path = [](const std::string& v) { return v == "''" ? std::string("none") : v; };
    say("init", "--init", path(was["init"]), path(is["init"]));
  }
  slices("train", "training");
  slices("validation", "validation");
  // Another size, slice count or seed (which draws the split) changes the checksum too: then it says nothing more.
  const bool said_why = told.count("size") || told.count("train") || told.count("validation") || told.count("seed");
  const bool split_recorded = was.count("validation_data") > 0;  // before differs() adds the key
  if (differs("data") && !said_why)
    out.push_back("the slices differ (another --images, --masks, --lungs, --split, --synthetic or --pseudo)");
  else if (differs("validation_data") && !said_why)
    out.push_back(split_recorded
                      ? "the same slices are split otherwise (another --split, --folds or --val-fraction): the run "
                        "would train on slices it validated on"
                      : "the checkpoint was written by a covidrate that did not record which slices validate; "
                        "start the run afresh");
  told.insert("data");
  told.insert("validation_data");
  for (const auto* fields : {&was, &is})  // any part not named above
    for (const auto& [key, value] : *fields)
      if (!told.count(key) && differs(key)) say(key, key, was[key], is[key]);
  std::string joined;
  for (const std::string& part : out) joined += (joined.empty() ? "" : "; ") + part;
  return joined;
}

// Precise BN (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021): sets
// every BN layer's running mean and variance to the average of its batch
// statistics over `set`, computed with the current weights. The model's
// momentum update r = (1 - m) r + m b, started from r = 0, leaves m b after one
// batch, so each batch statistic is read back as r / m.
// `on_batch` (when given) hears the number of slices done after each batch.
void recalibrate_batchnorm(SegmentationNet& net, const std::vector<data::PreparedSlice>& set, int64_t batch,
                           const std::function<void(int64_t done)>& on_batch) {
  ParameterStore& store = net.parameters();
  const double momentum = BatchNormParams{}.momentum;  // what the model's BN layers use
  std::vector<Tensor> running;
  for (const ParameterStore::Buffer& b : store.buffers())
    if (b.name.ends_with(".running_mean") || b.name.ends_with(".running_var")) running.push_back(b.value);
  std::vector<std::vector<double>> sums(running.size());
  for (size_t i = 0; i < running.size(); ++i) sums[i].assign(static_cast<size_t>(running[i].numel()), 0.0);
  const bool was_training = net.training();
  net.set_training(true);
  ag::NoGrad no_grad;
  const int64_t size = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(set[0].image.size()))));
  for (size_t begin = 0; begin < set.size(); begin += static_cast<size_t>(batch)) {
    std::vector<int64_t> indices;
    for (size_t i = begin; i < std::min(set.size(), begin + static_cast<size_t>(batch)); ++i)
      indices.push_back(static_cast<int64_t>(i));
    for (Tensor& r : running) r.fill_(0.0);
    Tensor images, masks;
    make_batch(set, indices, size, nullptr, nullptr, store.device(), images, masks);
    net.forward(ag::Var(images));
    const double weight = static_cast<double>(indices.size()) / momentum;
    for (size_t i = 0; i < running.size(); ++i) {
      const std::vector<double> v = running[i].to_vector_f64();
      for (size_t k = 0; k < v.size(); ++k) sums[i][k] += v[k] * weight;
    }
    if (on_batch) on_batch(static_cast<int64_t>(begin + indices.size()));
  }
  for (size_t i = 0; i < running.size(); ++i) {
    for (double& v : sums[i]) v /= static_cast<double>(set.size());
    running[i].copy_from(Tensor::from_vector(running[i].shape(), sums[i]).to(store.dtype()));
  }
  net.set_training(was_training);
}

}  // namespace

LossKind parse_loss_kind(const std::string& name) {
  if (name == "hybrid") return LossKind::Hybrid;
  if (name == "wbce") return LossKind::WeightedBce;
  if (name == "ftl") return LossKind::FocalTversky;
  CR_FAIL("loss: unknown loss '" << name << "' (expected hybrid, wbce or ftl)");
}

const char* to_string(LossKind kind) {
  switch (kind) {
    case LossKind::Hybrid: return "hybrid";
    case LossKind::WeightedBce: return "wbce";
    case LossKind::FocalTversky: return "ftl";
  }
  return "?";
}

HybridLossParams loss_params(LossKind kind, double pos_weight) {
  CR_CHECK(pos_weight >= 0 && std::isfinite(pos_weight), "loss: pos_weight must be >= 0, got " << pos_weight);
  HybridLossParams p;
  p.pos_weight = pos_weight;
  if (kind == LossKind::WeightedBce) p.kappa = 0;
  if (kind == LossKind::FocalTversky) p.bce_weight = 0;
  return p;
}

double dice_at_half(const float* probabilities, const float* mask, int64_t n) {
  double both = 0, total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double predicted = probabilities[i] > 0.5f ? 1.0 : 0.0, truth = mask[i] != 0.f ? 1.0 : 0.0;
    both += predicted * truth;
    total += predicted + truth;
  }
  return total > 0 ? 2.0 * both / total : 1.0;
}

Evaluation evaluate(SegmentationNet& net, const std::vector<data::PreparedSlice>& set, int64_t batch,
                    const HybridLossParams& loss, bool batch_statistics,
                    const std::function<void(int64_t done)>& on_batch) {
  CR_CHECK(!set.empty(), "evaluate: empty set");
  CR_CHECK(batch > 0, "evaluate: batch " << batch);
  const bool was_training = net.training();
  net.set_training(batch_statistics);
  ag::NoGrad no_grad;
  const int64_t size = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(set[0].image.size()))));
  const Device device = net.parameters().device();
  Evaluation out;
  for (size_t begin = 0; begin < set.size(); begin += static_cast<size_t>(batch)) {
    std::vector<int64_t> indices;
    for (size_t i = begin; i < std::min(set.size(), begin + static_cast<size_t>(batch)); ++i)
      indices.push_back(static_cast<int64_t>(i));
    Tensor images, masks;
    make_batch(set, indices, size, nullptr, nullptr, device, images, masks);
    const ag::Var probabilities = net.forward(ag::Var(images));
    LossSums sums;
    ag::hybrid_loss(probabilities, masks, loss, &sums);
    out.loss += sums.loss * static_cast<double>(indices.size());
    const std::vector<float> p = probabilities.value().to_vector();
    for (size_t b = 0; b < indices.size(); ++b) {
      const data::PreparedSlice& s = set[static_cast<size_t>(indices[b])];
      out.dice.push_back(dice_at_half(p.data() + b * s.mask.size(), s.mask.data(), static_cast<int64_t>(s.mask.size())));
    }
    if (on_batch) on_batch(static_cast<int64_t>(begin + indices.size()));
  }
  out.loss /= static_cast<double>(set.size());
  out.mean_dice = std::accumulate(out.dice.begin(), out.dice.end(), 0.0) / static_cast<double>(out.dice.size());
  net.set_training(was_training);
  return out;
}

TrainResult train(const std::vector<data::PreparedSlice>& train_set,
                  const std::vector<data::PreparedSlice>& validation, const TrainOptions& o,
                  const std::function<bool(const EpochRecord&)>& on_epoch) {
  CR_CHECK(!train_set.empty(), "train: no training slices");
  CR_CHECK(o.size > 0 && o.size % 16 == 0, "train: size must be a positive multiple of 16, got " << o.size);
  CR_CHECK(o.batch > 0, "train: batch must be positive, got " << o.batch);
  CR_CHECK(o.epochs > 0 && o.patience > 0, "train: epochs " << o.epochs << " and patience " << o.patience
                                                            << " must be positive");
  CR_CHECK(!o.out_dir.empty(), "train: no output folder");
  for (const auto* set : {&train_set, &validation})
    for (const data::PreparedSlice& s : *set)
      CR_CHECK(static_cast<int64_t>(s.image.size()) == o.size * o.size && s.mask.size() == s.image.size(),
               "train: a prepared slice has " << s.image.size() << " pixels and " << s.mask.size()
                                              << " mask pixels; expected " << o.size << " x " << o.size);

  const std::unique_ptr<SegmentationNet> network = make_network(o.model);
  SegmentationNet& net = *network;
  // Loaded on the CPU before the move; a resume then overwrites them with the checkpoint's.
  if (!o.init_weights.empty()) net.parameters().load(o.init_weights);
  net.parameters().to(o.device);
  Adam adam(net.parameters(), o.adam);
  const HybridLossParams loss = loss_params(o.loss, o.pos_weight);
  std::mt19937_64 rng(o.seed);

  CheckpointState state;
  state.fingerprint = fingerprint(o, train_set, validation);
  state.threads = cpu::num_threads();
  state.device = to_string(o.device);
  state.deterministic = o.deterministic;
  const std::string log_path = (fs::path(o.out_dir) / "log.jsonl").string();
  TrainResult result;
  if (o.resume)
    state = load_checkpoint(o.out_dir, state, o.deterministic, net.parameters(), adam, rng, fingerprint_difference);
  else
    CR_CHECK(!checkpoint_exists(o.out_dir), "train: " << o.out_dir
                                                      << " already holds a checkpoint; pass --resume to continue it "
                                                         "or choose another output folder");
  // Everything that can be checked before writing has been: from here on the run writes.
  fs::create_directories(o.out_dir);
  // What killed runs left half-written (best.safetensors.tmp-PID-N: at full
  // width 58 MB each); the folder is this run's (cmd_train holds its lock).
  remove_stale_temporaries(o.out_dir, {"best.safetensors", "curves.svg", "split.json"});
  if (o.on_start) o.on_start();
  if (o.resume) {
    truncate_log(log_path, state.log_bytes);
    result.epochs = read_training_log(log_path);
  } else {
    truncate_log(log_path, 0);
  }
  result.best_epoch = state.best_epoch;
  result.best_val_loss = state.best_val_loss;
  result.best_val_dice = state.best_val_dice;
  result.stopped_early = state.stopped_early;
  if (state.stopped_early) return result;

  const int64_t steps = (static_cast<int64_t>(train_set.size()) + o.batch - 1) / o.batch;
  const int64_t train_count = static_cast<int64_t>(train_set.size());
  const auto report = [&](TrainProgress::Stage stage, int epoch, int64_t done, int64_t total) {
    if (o.on_progress)
      o.on_progress(TrainProgress{.stage = stage, .epoch = epoch, .done = done, .total = total});
  };
  for (int epoch = state.epoch + 1; epoch <= o.epochs; ++epoch) {
    const Clock::time_point start = Clock::now();
    report(TrainProgress::Stage::Steps, epoch, 0, train_count);
    net.set_training(true);
    const std::vector<int64_t> order = shuffled(static_cast<int64_t>(train_set.size()), rng);
    double loss_sum = 0;
    int64_t seen = 0;
    for (int64_t step = 0; step < steps; ++step) {
      const auto first = order.begin() + step * o.batch;
      const std::vector<int64_t> indices(first, std::min(order.end(), first + o.batch));
      Tensor images, masks;
      make_batch(train_set, indices, o.size, o.augment ? &o.augmentation : nullptr, &rng, o.device, images, masks);
      adam.zero_grad();
      LossSums sums;
      {
        ag::Tape tape;
        const ag::Var batch_loss = ag::hybrid_loss(net.forward(ag::Var(images)), masks, loss, &sums);
        tape.backward(batch_loss);
      }
      adam.step();
      CR_CHECK(std::isfinite(sums.loss), "train: the loss became " << sums.loss << " at epoch " << epoch
                                                                   << ", step " << step + 1
                                                                   << " (try a lower learning rate)");
      loss_sum += sums.loss * static_cast<double>(indices.size());
      seen += static_cast<int64_t>(indices.size());
      report(TrainProgress::Stage::Steps, epoch, seen, train_count);
    }
    EpochRecord record;
    record.epoch = epoch;
    record.train_loss = loss_sum / static_cast<double>(seen);
    record.images_per_second = static_cast<double>(seen) / seconds_since(start);  // the steps alone
    // Precise BN's pass over the training side, then the validation set: one stage for the display.
    const int64_t bn_count = o.precise_bn ? train_count : 0;
    const int64_t checked = bn_count + static_cast<int64_t>(validation.size());
    report(TrainProgress::Stage::Validation, epoch, 0, checked);
    if (o.precise_bn)
      recalibrate_batchnorm(net, train_set, o.batch,
                            [&](int64_t done) { report(TrainProgress::Stage::Validation, epoch, done, checked); });
    if (!validation.empty()) {
      const Evaluation v = evaluate(net, validation, o.batch, loss, false, [&](int64_t done) {
        report(TrainProgress::Stage::Validation, epoch, bn_count + done, checked);
      });
      record.val_loss = v.loss;
      record.val_dice = v.mean_dice;
    } else {
      record.val_loss = record.train_loss;
      record.val_dice = std::numeric_limits<double>::quiet_NaN();
    }
    record.lr = o.adam.lr / (1.0 + o.adam.decay * static_cast<double>(adam.steps()));
    record.seconds = seconds_since(start);

    if (state.best_epoch == 0 || record.val_loss < state.best_val_loss) {
      state.best_epoch = epoch;
      state.best_val_loss = record.val_loss;
      state.best_val_dice = record.val_dice;
      state.epochs_without_improvement = 0;
      std::map<std::string, std::string> metadata = architecture_metadata(o.model);
      metadata["epoch"] = std::to_string(epoch);
      metadata["val_loss"] = std::to_string(record.val_loss);
      metadata["size"] = std::to_string(o.size);
      if (o.lungs_only) metadata["lungs"] = "1";
      net.parameters().save((fs::path(o.out_dir) / "best.safetensors").string(), metadata);
    } else {
      ++state.epochs_without_improvement;
    }
    state.stopped_early = state.epochs_without_improvement >= o.patience;
    state.epoch = epoch;
    state.log_bytes = append_log(log_path, log_line(record));
    save_checkpoint(o.out_dir, state, net.parameters(), adam, rng);

    result.epochs.push_back(record);
    save_training_curves((fs::path(o.out_dir) / "curves.svg").string(), result.epochs, state.best_epoch);
    result.best_epoch = state.best_epoch;
    result.best_val_loss = state.best_val_loss;
    result.best_val_dice = state.best_val_dice;
    result.stopped_early = state.stopped_early;
    if (on_epoch && !on_epoch(record)) break;
    if (state.stopped_early) break;
  }
  return result;
}

}  // namespace covidrate
