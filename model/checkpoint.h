// The training checkpoint: everything a killed run needs to continue as if it
// had never stopped. A folder `checkpoint/` in the run's output folder:
//
//   weights.safetensors  parameters and BN running statistics (ParameterStore::save)
//   adam.safetensors     Adam's m, v and step (Adam::save)
//   state.json           epoch, early-stopping bookkeeping, the generator's state,
//                        the log's length and a fingerprint of the settings
//
// Three files cannot be replaced by one rename, so a new checkpoint is written
// whole into checkpoint.tmp/, then checkpoint/ becomes checkpoint.old/,
// checkpoint.tmp/ becomes checkpoint/, and checkpoint.old/ is removed. A kill
// at any point leaves one complete checkpoint: checkpoint/, or, between the two
// renames, checkpoint.old/, which loading falls back to.
#pragma once
#include <cstdint>
#include <functional>
#include <random>
#include <string>

#include "nn/adam.h"
#include "nn/parameters.h"

namespace covidrate {

struct CheckpointState {
  std::string fingerprint;  // settings that must not change across a resume
  int threads = 1;          // CPU threads of the run (deterministic mode insists on the same)
  std::string device;       // "cpu" or "cuda"
  // Started with --deterministic: every resume then insists on the same threads
  // and device, with the flag or without it (a resume that drops the flag would
  // quietly end the bit-for-bit promise).
  bool deterministic = false;
  int epoch = 0;            // epochs finished
  int best_epoch = 0;       // 0: none yet
  double best_val_loss = 0, best_val_dice = 0;
  int epochs_without_improvement = 0;
  bool stopped_early = false;
  uint64_t log_bytes = 0;   // log.jsonl's length after this epoch's line
};

bool checkpoint_exists(const std::string& out_dir);

void save_checkpoint(const std::string& out_dir, const CheckpointState& state, const ParameterStore& store,
                     const Adam& adam, const std::mt19937_64& rng);

// What differs between a checkpoint's fingerprint and the run's, in words for
// the user ("--width was 0.05, now 0.0625; --seed was 1, now 2"): the owner of
// the fingerprint's format (the trainer) knows which setting each part is.
// Empty when it cannot tell.
using FingerprintExplainer = std::function<std::string(const std::string& saved, const std::string& now)>;

// Loads the checkpoint into store, adam and rng and returns its state. Throws
// covidrate::Error naming the folder when there is none, it is damaged, its
// fingerprint differs from `current`'s (in any way: the message says how with
// `explain`, else shows both fingerprints; a saved fingerprint that is the
// start of `current`'s was written before the fields after it existed, and is
// held to its own), or (deterministic) the thread count or device differs.
CheckpointState load_checkpoint(const std::string& out_dir, const CheckpointState& current, bool deterministic,
                                ParameterStore& store, Adam& adam, std::mt19937_64& rng,
                                const FingerprintExplainer& explain = nullptr);

}  // namespace covidrate
