// Pseudo-labels for COVID-Rate's unsupervised enhancement (Enshaei et al.,
// Sci. Rep. 2022): a network trained on one source segments unlabelled slices
// from another (other scanners, other windowing); each prediction is scored by
// its certainty index (ops::certainty_index: the mean probability of the pixels
// above a cut-off, 0.3 in the paper), and the most certain predictions become
// training pairs, thresholded masks beside their pictures. Fine-tuning on them
// together with the labelled slices (`covidrate train --pseudo DIR`) moves the
// network towards the new source without a single new annotation.
//
// Why the certainty index and not, say, the mean confidence of every pixel:
// nearly every pixel of a slice is confidently background, so a whole-slice
// mean says little about the lesions; the index looks only at what the network
// calls (possibly) lesion and asks how sure it is there. A slice where the
// network marks nothing scores 0 and is never kept: it gives no lesion to learn.
//
// Nor is a picture that is not a chest CT slice: each picture goes through the
// check `segment` makes before its network runs (ClassicalLungExtractor,
// slice_has_lung, the picture taken in the MedSeg layout), and one without lung
// is never kept, however sure the network is (on noise it can be: index 0.996,
// 99.99 % "lesion").
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "model/covidrate_net.h"
#include "nn/error.h"

namespace covidrate::data {

struct PseudoLabelOptions {
  double cutoff = kPaperCertaintyCutoff;  // the certainty index's cut-off
  double threshold = 0.5;      // a pixel of a pseudo-label is lesion when its probability is above this
  double min_certainty = 0.8;  // keep predictions whose index is at least this...
  int64_t top = 0;             // ...and of those at most the `top` most certain (0: all of them)
  int64_t batch = 4;           // slices per forward pass
  int64_t size = 512;          // the network's input side
  Device device = Device::CPU;
  // What computes the scores, as text (the command's: the weights' FNV-1a hash,
  // the architecture, the precision): a run resumed from OUT.partial must be
  // given the same, and the same cutoff, threshold, least certainty and size.
  std::string network_identity;
  // Called after each batch with (slices scored, slices to score): on a resumed
  // run the slices still to score, not those scored before.
  std::function<void(int64_t, int64_t)> progress;
  // Called once, before any work, when the run resumes from OUT.partial, with
  // (slices scored there, slices in all).
  std::function<void(int64_t, int64_t)> resumed;
};

// certainty.csv's note for a picture without lung (ScoredSlice::lung false).
inline constexpr const char* kNoLungNote = "no lung";

// The work folder beside the output, where an interrupted run resumes.
inline constexpr const char* kPartialSuffix = ".partial";

struct ScoredSlice {
  std::string name;  // the file stem
  std::string path;
  double certainty = 0;       // ops::certainty_index of the prediction at the network's resolution
  double lesion_percent = 0;  // of the picture's pixels, in its pseudo-label
  bool lung = true;           // the classical lung extractor found lung in it; without, it is not a chest
                              // CT slice and is never kept (it is still scored, for certainty.csv)
  bool kept = false;
};

// Segments every picture and scores its prediction; `keep` then marks the kept
// slices (see PseudoLabelOptions). When out_dir is not empty it writes
//   out_dir/images/<stem>.<ext>   the kept pictures, copied as they are
//   out_dir/masks/<stem>.png      their pseudo-labels, 0 / 255, the picture's size
//   out_dir/certainty.csv         every slice: name, index, lesion %, kept, note
//                                 (note: empty, or "no lung" for a picture passed over as not a chest)
//   out_dir/overview.png          the 12 most certain kept slices, pseudo-label outlined
// as a folder that appears only once complete (out_dir must not exist), laid
// out as data/dataset.h reads a training set. Returns every slice, in the
// order given. Throws covidrate::Error naming the file for unreadable pictures,
// and, before any work, naming both files when two pictures have the same stem
// (0.jpg and 0.png would both be masks/0.png).
//
// With an out_dir the run can be interrupted and resumed (a thousand slices
// take 15 minutes on two cores): each batch's scores, and the pseudo-labels
// that may be kept, are journalled in out_dir.partial/ (synced batch by batch)
// before the next batch starts, and a later call with the same out_dir and
// settings scores only the pictures not journalled there, then writes the
// same folder an uninterrupted run writes and removes out_dir.partial.
// Other settings than the journal's are refused, naming the one that differs.
// (kPartialSuffix; the journal's layout is in pseudo_labels.cpp.)
// Thrown (before any scoring) when out_dir.partial holds a run of other settings.
struct JournalOfOtherSettings : Error {
  using Error::Error;
};
std::vector<ScoredSlice> make_pseudo_labels(const std::vector<std::string>& pictures, const SegmentationNet& net,
                                            const PseudoLabelOptions& options, const std::string& out_dir);

// The PNG and JPG files of a folder, sorted by name. Throws when it holds none,
// or two with the same stem (naming both).
std::vector<std::string> pictures_in(const std::string& dir);

}  // namespace covidrate::data
