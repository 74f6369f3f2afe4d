// A segmentation data set on disk: a folder of slice pictures and a folder of
// lesion masks, laid out like /work/shared/data/medseg-semiseg/train:
//
//   images/<stem>.jpg   8-bit grey slice (PNG or JPG)
//   masks/<stem>.png    lesion mask, 0 / 255 (or 0 / 1; a palette PNG's
//                       classes 1.. all count as lesion)
//
// Pairs are matched by file stem; the whole set is read into memory (the
// MedSeg training set is 50 slices of at most 487 x 487). Splits are lists
// of indices into Dataset::samples, drawn from a seeded generator so that a
// (seed, count) pair always gives the same split on every machine.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/volume.h"

namespace covidrate::data {

struct Sample {
  std::string name;        // the shared file stem, e.g. "12"
  std::string image_path;  // as found on disk
  std::string mask_path;
  Volume image;            // one slice in the input domain (Picture8Bit, 0..255)
  Volume mask;             // same grid, Label, values 0 (background) and 1 (lesion)
  // Lung pixels (1) and the rest (0) on the same grid, from ClassicalLungExtractor
  // on the 8-bit slice; empty (nx == 0) unless DatasetOptions::lungs.
  Volume lungs;

  bool has_lungs() const { return lungs.nx > 0; }
};

struct DatasetOptions {
  // Compute lung masks: input preparation then zeroes everything outside them.
  bool lungs = false;
};

struct Dataset {
  std::vector<Sample> samples;  // sorted by name (numerically when the stems are numbers)
  int64_t size() const { return static_cast<int64_t>(samples.size()); }
};

// Reads every picture of `images_dir` (.png, .jpg, .jpeg) and its mask in
// `masks_dir` (the same stem, any of those extensions). Throws covidrate::Error
// naming the file for: an image without a mask or a mask without an image, an
// unreadable picture, a mask that is not binary (0/255 or 0/1), a mask whose
// size differs from its image's, a missing folder, or an empty set.
Dataset load_dataset(const std::string& images_dir, const std::string& masks_dir,
                     const DatasetOptions& options = {});

// Indices of the samples used to fit the weights and to validate them.
struct Split {
  std::vector<int64_t> train;
  std::vector<int64_t> validation;
};

// A seeded shuffle of 0..count-1; round(validation_fraction * count) indices
// (at least 1 when the fraction is > 0 and count >= 2) go to validation.
// validation_fraction in [0, 1).
Split train_validation_split(int64_t count, double validation_fraction, uint64_t seed);

// k-fold cross-validation: a seeded shuffle of 0..count-1 cut into k folds of
// sizes differing by at most one; split f validates on fold f and trains on
// the other k - 1. Requires 2 <= k <= count.
std::vector<Split> k_fold_splits(int64_t count, int k, uint64_t seed);

// The slice names a split.json lists (as `covidrate train` writes it:
// {"train": [names], "validation": [names]}). Throws covidrate::Error naming
// the file when it is unreadable, not JSON, lacks a list, or holds a non-string.
struct SplitNames {
  std::vector<std::string> train, validation;
};
SplitNames read_split_names(const std::string& path);

}  // namespace covidrate::data
