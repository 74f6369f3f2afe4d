// Training COVID-Rate (or a baseline, TrainOptions::model): the loop of the authors' Keras code, with what a long
// run on shared machines needs on top.
//
//   every epoch:  shuffle the training slices; for each mini-batch draw a fresh
//                 augmentation per slice (data/augment.h), forward, hybrid loss,
//                 backward, Adam step (lr 1e-3 with Keras' decay);
//                 then BN's running statistics recomputed on the training
//                 slices ("precise BN", see TrainOptions::precise_bn) and the
//                 validation loss and Dice with them;
//   keep:         best.safetensors, the weights of the lowest validation loss;
//   stop:         when the validation loss has not improved for `patience`
//                 epochs (Keras EarlyStopping, min_delta 0), or after `epochs`;
//   checkpoint:   after every epoch, checkpoint/ in the output folder holds the
//                 weights, Adam's moments and step, the epoch, the generator's
//                 state and the length of the log, replaced atomically, so a run
//                 killed at any moment resumes (`resume`) from the last finished
//                 epoch and, in deterministic mode, ends with the same bits as a
//                 run never interrupted;
//   log:          log.jsonl, one JSON object per epoch (epoch, train_loss,
//                 val_loss, val_dice, lr, seconds, images_per_second).
//
// One generator (mt19937_64, seeded by `seed`) draws the shuffles and the
// augmentations; the weights are drawn from the model's own seed. The engine's
// ops are deterministic for a fixed device and thread count (fixed work split
// on the CPU, deterministic cuDNN algorithms on CUDA), so `deterministic`
// records the thread count and refuses to resume under another one.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/augment.h"
#include "data/prepare.h"
#include "model/segmentation_net.h"

namespace covidrate {

enum class LossKind { Hybrid, WeightedBce, FocalTversky };
// "hybrid", "wbce", "ftl"; throws for anything else.
LossKind parse_loss_kind(const std::string& name);
const char* to_string(LossKind kind);
// The loss terms of a kind: hybrid = wBCE + focal Tversky, or one of them alone.
HybridLossParams loss_params(LossKind kind, double pos_weight);

// Lesions cover a few per cent of a slice: pos_weight 2 weighs a lesion pixel
// 3x in the BCE term. Moderate on purpose, as the focal Tversky term (alpha 0.7
// on the false negatives) already pushes towards recall.
inline constexpr double kDefaultPosWeight = 2.0;

// An epoch's progress, as TrainOptions::on_progress receives it: done = 0 as a
// stage begins, then after each batch, up to done = total.
struct TrainProgress {
  enum class Stage {
    Steps,       // the training steps; counts the training side's images
    Validation,  // precise BN's pass over the training side, then the validation set; counts slices
  };
  Stage stage = Stage::Steps;
  int epoch = 0;  // 1-based
  int64_t done = 0, total = 0;
};

// The learning-rate decay of the COVID-Rate reference code (Keras 2's
// Adam(learning_rate=0.001, decay=0.0004)): lr / (1 + 4e-4 * step), 0.71e-3 after
// 1000 steps. The shipped weights predate it and were trained with lr / 100.
inline constexpr double kReferenceDecay = 4e-4;

struct TrainOptions {
  NetConfig model;  // architecture, width, CPB, SE, initial-weight seed
  int64_t size = 512;     // the network's input side S (a multiple of 16)
  int64_t batch = 4;
  int epochs = 100;
  int patience = 10;
  AdamParams adam{};      // lr 1e-3; decay set by the caller (cmd_train: kReferenceDecay)
  LossKind loss = LossKind::Hybrid;
  double pos_weight = kDefaultPosWeight;
  bool augment = true;
  data::AugmentOptions augmentation{};
  // Before each validation, set BN's running statistics to the average batch
  // statistics of the (unaugmented) training slices. Keras' momentum 0.99 makes
  // them lag ~100 steps behind the weights; on 40 slices (10 steps an epoch)
  // that made the validation loss climb for 10 epochs and early stopping end a
  // run at epoch 12 with the weights of epoch 2 (docs/training.md). Costs one
  // forward pass over the training set per epoch. false: Keras' behaviour.
  bool precise_bn = true;
  uint64_t seed = 0;      // shuffles and augmentations
  bool deterministic = false;
  Device device = Device::CPU;
  // Start from these weights (a .safetensors of the same architecture) instead
  // of a random draw: fine-tuning. Empty: the model's seeded initialization.
  std::string init_weights;
  // Created if missing, once every check has passed (the network, the init
  // weights, the checkpoint to resume or the absence of one): a run that
  // cannot start writes nothing. Holds best.safetensors, checkpoint/, log.jsonl.
  std::string out_dir;
  // The slices were masked to the lungs (train --lungs): recorded in the
  // weights' metadata as "lungs": "1", so that eval feeds them the same way and
  // segment and pseudo-label, which feed whole slices, refuse them.
  bool lungs_only = false;
  bool resume = false;
  // Called once, after those checks, when out_dir exists and before the
  // trainer writes into it: the caller's own files (cmd_train: split.json).
  std::function<void()> on_start;
  // Where an epoch stands, for a display (cmd_train draws it on stderr). It
  // sees only counts, so the run's results do not depend on it.
  std::function<void(const TrainProgress&)> on_progress;
};

struct EpochRecord {
  int epoch = 0;  // 1-based
  double train_loss = 0, val_loss = 0, val_dice = 0;
  double lr = 0;  // Keras' decayed learning rate at the end of the epoch
  double seconds = 0, images_per_second = 0;
};

struct TrainResult {
  std::vector<EpochRecord> epochs;  // the whole log, resumed epochs included
  int best_epoch = 0;
  double best_val_loss = 0, best_val_dice = 0;
  bool stopped_early = false;
};

// Validation of a set in evaluation mode (no tape).
struct Evaluation {
  double loss = 0;                 // the loss of each batch, weighted by its size
  double mean_dice = 0;            // per image at threshold 0.5, averaged
  std::vector<double> dice;        // per image (1 when mask and prediction are both empty)
};

// The loop. `train_set` and `validation` hold prepared slices of side
// options.size (data::prepare_sample). With an empty validation set the
// training loss stands in for the validation loss. `on_epoch`, called after
// each epoch's checkpoint, may return false to stop there (as a kill would).
TrainResult train(const std::vector<data::PreparedSlice>& train_set,
                  const std::vector<data::PreparedSlice>& validation, const TrainOptions& options,
                  const std::function<bool(const EpochRecord&)>& on_epoch = nullptr);

// The records of a run's log.jsonl, in order (train appends one per epoch); a
// line that is not a record, or epochs out of order, is an error naming the
// file and the line.
std::vector<EpochRecord> read_training_log(const std::string& path);

// Loss and Dice of `net` on `set`, in batches of `batch`, in evaluation mode,
// or with batch statistics when `batch_statistics` (which also moves BN's
// running averages). Restores the network's training flag.
// `on_batch`, when given, is called with the number of slices done after each batch.
Evaluation evaluate(SegmentationNet& net, const std::vector<data::PreparedSlice>& set, int64_t batch,
                    const HybridLossParams& loss, bool batch_statistics = false,
                    const std::function<void(int64_t done)>& on_batch = nullptr);

// Dice of a probability map thresholded at 0.5 against a 0/1 mask.
double dice_at_half(const float* probabilities, const float* mask, int64_t n);

}  // namespace covidrate
