// A synthetic training set on disk: what `covidrate synth` writes.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "data/synth.h"

namespace covidrate::data {

struct SynthSetReport {
  int64_t wanted = 0;       // round(ratio x number of infected slices)
  int64_t written = 0;      // pairs written (less than wanted only when almost nothing qualifies)
  int64_t passed_over = 0;  // infected-slice picks whose lesions made no pair with rate > 0.01
  double mean_infection_rate = 0;
};

// The margin of the cut around the healthy lungs (below): segment's cut.
inline constexpr double kSynthMargin = 0.02;

// Pairs each infected slice in turn with randomly drawn healthy slices (seeded)
// until ratio x N pairs exist, and writes them in the MedSeg layout:
// out_dir/images/synth_NNNNN.png (grey), out_dir/masks/synth_NNNNN.png (0/255),
// each cropped around the healthy lungs with `margin` (a fraction of the lung
// box's width and height, added on each side; 0.02 by default, as segment cuts
// studies, so that the healthy lungs appear at the scale the network sees at
// inference; version 2 of the shipped weights used 0.10) and transposed like
// the MedSeg pictures, plus out_dir/overview.png (the first eight, outlined) and
// out_dir/sources.json, where each pair came from (read_synthetic_sources).
// The folder appears atomically: written as out_dir + ".tmp", then renamed; an
// existing out_dir is refused. `progress(written, wanted)` is called after each pick.
SynthSetReport write_synthetic_set(const std::vector<AnnotatedSlice>& infected,
                                   const std::vector<AnnotatedSlice>& healthy, double ratio, uint64_t seed,
                                   const std::string& out_dir,
                                   const std::function<void(int64_t, int64_t)>& progress = nullptr,
                                   double margin = kSynthMargin);

// Where each pair of a synthetic set came from: its name (the pictures' stem,
// "synth_00000") -> the name of the infected slice whose lesions it holds ("12").
// `covidrate train` leaves out the pairs whose lesions come from its validation
// slices: training on them would show the network the very lesions it is then
// scored on. nullopt when dir has no sources.json (a folder made by hand, or by
// covidrate synth before it wrote one); a malformed file is an error naming it.
std::optional<std::map<std::string, std::string>> read_synthetic_sources(const std::string& dir);

}  // namespace covidrate::data
