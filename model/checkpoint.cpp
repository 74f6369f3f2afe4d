#include "model/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "nn/json.h"
#include "nn/text_file.h"

namespace covidrate {
namespace {

namespace fs = std::filesystem;

fs::path current_dir(const std::string& out) { return fs::path(out) / "checkpoint"; }
fs::path old_dir(const std::string& out) { return fs::path(out) / "checkpoint.old"; }
fs::path new_dir(const std::string& out) { return fs::path(out) / "checkpoint.tmp"; }

std::string state_json(const CheckpointState& s, const std::mt19937_64& rng) {
  std::ostringstream generator;
  generator << rng;
  std::ostringstream os;
  os.precision(17);
  os << "{\n  \"fingerprint\": " << json::quote(s.fingerprint) << ",\n  \"threads\": " << s.threads
     << ",\n  \"deterministic\": " << (s.deterministic ? "true" : "false")
     << ",\n  \"device\": " << json::quote(s.device) << ",\n  \"epoch\": " << s.epoch
     << ",\n  \"best_epoch\": " << s.best_epoch << ",\n  \"best_val_loss\": " << s.best_val_loss
     << ",\n  \"best_val_dice\": " << s.best_val_dice
     << ",\n  \"epochs_without_improvement\": " << s.epochs_without_improvement
     << ",\n  \"stopped_early\": " << (s.stopped_early ? "true" : "false") << ",\n  \"log_bytes\": " << s.log_bytes
     << ",\n  \"rng\": " << json::quote(generator.str()) << "\n}\n";
  return os.str();
}

const json::Value& member(const json::Value& root, const char* key, json::Value::Kind kind, const fs::path& file) {
  const json::Value* v = root.find(key);
  CR_CHECK(v && v->kind == kind, "checkpoint: " << file.string() << " has no " << json::kind_name(kind) << " '"
                                                << key << "'");
  return *v;
}

double number(const json::Value& root, const char* key, const fs::path& file) {
  const std::string& text = member(root, key, json::Value::Kind::Number, file).text;
  try {
    return std::stod(text);
  } catch (const std::exception&) {
    CR_FAIL("checkpoint: " << file.string() << ": '" << key << "' is " << text);
  }
}

}  // namespace

bool checkpoint_exists(const std::string& out_dir) {
  return fs::exists(current_dir(out_dir) / "state.json") || fs::exists(old_dir(out_dir) / "state.json");
}

void save_checkpoint(const std::string& out_dir, const CheckpointState& state, const ParameterStore& store,
                     const Adam& adam, const std::mt19937_64& rng) {
  const fs::path fresh = new_dir(out_dir), current = current_dir(out_dir), old = old_dir(out_dir);
  fs::remove_all(fresh);
  fs::create_directories(fresh);
  store.save((fresh / "weights.safetensors").string());  // each save flushes and renames its own file
  adam.save((fresh / "adam.safetensors").string());
  {
    // Checked to the close, with the reason, and on the disk before the renames below.
    AtomicFile out((fresh / "state.json").string());
    const std::string text = state_json(state, rng);
    out.write(text.data(), text.size());
    out.commit();
  }
  // checkpoint.old/ exists here only when an earlier save was killed after its
  // first rename; checkpoint/ is then the complete one, so the old can go.
  if (fs::exists(current)) {
    fs::remove_all(old);
    fs::rename(current, old);
  }
  publish_folder(fresh.string(), current.string());  // flushed to the disk before and after the rename
  fs::remove_all(old);
}

CheckpointState load_checkpoint(const std::string& out_dir, const CheckpointState& current, bool deterministic,
                                ParameterStore& store, Adam& adam, std::mt19937_64& rng,
                                const FingerprintExplainer& explain) {
  fs::path dir = current_dir(out_dir);
  if (!fs::exists(dir / "state.json")) dir = old_dir(out_dir);
  CR_CHECK(fs::exists(dir / "state.json"), "train --resume: " << out_dir << " holds no checkpoint");
  const fs::path file = dir / "state.json";
  std::ifstream in(file, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  json::Value root;
  try {
    root = json::parse(text);
  } catch (const Error& e) {
    CR_FAIL("checkpoint: " << file.string() << " is damaged: " << e.what());
  }
  CheckpointState s;
  s.fingerprint = member(root, "fingerprint", json::Value::Kind::String, file).text;
  s.device = member(root, "device", json::Value::Kind::String, file).text;
  s.threads = static_cast<int>(number(root, "threads", file));
  s.epoch = static_cast<int>(number(root, "epoch", file));
  s.best_epoch = static_cast<int>(number(root, "best_epoch", file));
  s.best_val_loss = number(root, "best_val_loss", file);
  s.best_val_dice = number(root, "best_val_dice", file);
  s.epochs_without_improvement = static_cast<int>(number(root, "epochs_without_improvement", file));
  s.stopped_early = member(root, "stopped_early", json::Value::Kind::Bool, file).boolean;
  s.log_bytes = static_cast<uint64_t>(number(root, "log_bytes", file));
  // Absent from checkpoints written before it was recorded.
  if (const json::Value* d = root.find("deterministic"); d && d->kind == json::Value::Kind::Bool) s.deterministic = d->boolean;

  // New fields are only ever appended to the fingerprint: a checkpoint written
  // before one existed (the fingerprint it saved is the start of today's) is
  // held to the fields it has.
  const bool older_format = current.fingerprint.starts_with(s.fingerprint + " ");
  if (s.fingerprint != current.fingerprint && !older_format) {
    const std::string differences = explain ? explain(s.fingerprint, current.fingerprint) : std::string();
    const char* advice = "Resume with the options of that run, or choose another --out to start afresh";
    if (!differences.empty())
      CR_FAIL("train --resume: the checkpoint in " << out_dir << " was made with other settings or data: "
                                                   << differences << ". " << advice);
    CR_FAIL("train --resume: the checkpoint in " << out_dir << " was made with other settings or data. " << advice
                                                 << ".\n  checkpoint: " << s.fingerprint
                                                 << "\n  now:        " << current.fingerprint);
  }
  if (deterministic || s.deterministic) {
    CR_CHECK(s.threads == current.threads && s.device == current.device,
             "train --resume" << (deterministic ? " --deterministic" : "") << ": the checkpoint was made on "
                 << s.device << " with " << s.threads << " CPU threads"
                 << (s.deterministic && !deterministic ? " by a run started with --deterministic" : "")
                 << ", this run has " << current.device << " with " << current.threads << " (set COVIDRATE_THREADS="
                 << s.threads << "): the split of the work changes the rounding");
  }
  store.load((dir / "weights.safetensors").string());
  adam.load((dir / "adam.safetensors").string());
  std::istringstream generator(member(root, "rng", json::Value::Kind::String, file).text);
  generator >> rng;
  CR_CHECK(!generator.fail(), "checkpoint: " << file.string() << " has a damaged generator state");
  // The run continues under its own thread count and device.
  s.threads = current.threads;
  s.device = current.device;
  s.deterministic = s.deterministic || deterministic;
  return s;
}

}  // namespace covidrate
