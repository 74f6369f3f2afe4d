// A picture of a training run: the training and validation loss per epoch
// (left panel) and the validation Dice (right), the best epoch marked, as an
// SVG document (text; any browser shows it, no plotting library needed).
// `covidrate train` rewrites OUT/curves.svg after every epoch (a resumed run
// draws its whole history), and `covidrate curves LOG.jsonl` draws it from a
// run's log.
#pragma once
#include <string>
#include <vector>

#include "model/trainer.h"

namespace covidrate {

// epochs in order (at least one); best_epoch 0 marks none. Non-finite values
// (no validation set: Dice is NaN) are left out, breaking their line there;
// a series with no finite value is not drawn and the legend says so.
std::string training_curves_svg(const std::vector<EpochRecord>& epochs, int best_epoch);

// training_curves_svg written to `path` through a temporary file and a
// rename: a reader never sees half a picture.
void save_training_curves(const std::string& path, const std::vector<EpochRecord>& epochs, int best_epoch);

// The epoch with the lowest finite validation loss (the one best.safetensors
// holds; the first of equals), 0 when there is none.
int best_epoch_of(const std::vector<EpochRecord>& epochs);

}  // namespace covidrate
