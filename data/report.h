// What `covidrate segment` tells about one study: figures per slice and per
// lung, report.json, the infection-rate plot (drawn here into an RGB buffer,
// no plotting library), the montage of the most affected slices and report.html.
#pragma once
#include <array>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "data/network_stages.h"
#include "data/overlay.h"
#include "data/volume.h"

namespace covidrate::data {

// The paper counts a slice as infected when lesions cover more than 0.5% of its lung.
inline constexpr double kInfectedSliceRate = 0.005;

struct SliceFigures {
  int64_t index = 0;
  int64_t lesion_pixels = 0, lung_pixels = 0;
  double lesion_mm2 = 0, lung_mm2 = 0;
  double infection_rate = 0;  // lesion / lung pixels; 0 when the slice holds no lung
  int64_t high_opacity_pixels = 0;  // lesion pixels at kHighOpacityMinHu or more (0 when not in HU)
  bool infected = false;      // infection_rate > kInfectedSliceRate
  // The certainty index of the network's prediction for the slice (Segmentation::certainty);
  // NaN when the slice was not sent to the network. Not from the masks: measure() leaves it NaN.
  double certainty_index = std::numeric_limits<double>::quiet_NaN();
};

// Lesion voxels at or above this many HU are "high opacity": consolidation
// (and vessels or airway walls inside a lesion), where ground glass lies
// between about -750 and -300 HU. The threshold of Chaganti et al. (Radiology:
// AI 2020), whose "percentage of high opacity" (PHO) sits beside the
// percentage of opacity in COVID-19 severity reports; they threshold each
// region's mean HU, this report each voxel.
inline constexpr float kHighOpacityMinHu = -200;

// Lesion and lung of one lung (or both), in voxels and millilitres.
struct LungFigures {
  int64_t lesion_voxels = 0, lung_voxels = 0;
  double lesion_ml = 0, lung_ml = 0;
  double opacity_percent = 0;  // 100 * lesion / lung volume; 0 without lung
  // The lesion's voxels at or above kHighOpacityMinHu, and 100 * their volume /
  // lung volume (0 without lung). Only for an input in HU: without one
  // (pictures, whose window is unknown) high_opacity_known is false.
  int64_t high_opacity_voxels = 0;
  double high_opacity_ml = 0, high_opacity_percent = 0;
};

// 100 * voxels / the lung's voxels; 0 without lung.
inline double percent_of_lung(const LungFigures& lung, int64_t voxels) {
  return lung.lung_voxels > 0 ? 100.0 * static_cast<double>(voxels) / static_cast<double>(lung.lung_voxels) : 0.0;
}

struct StudyFigures {
  std::vector<SliceFigures> slices;
  LungFigures right, left, both;
  int64_t infected_slices = 0;
  bool high_opacity_known = false;  // the input was in HU (measure was given its domain)
  // The mean certainty index over the slices whose prediction has any pixel
  // above the cut-off (index > 0); NaN when none has (docs/segment.md).
  double mean_certainty_index() const;
};

// Figures from the lesion mask (non-zero = lesion) and the lung labels
// (1 right, 2 left) of one grid; sizes from its spacing. `hu_domain`: the input
// domain (to_input_domain) of a volume in HU on the same grid, from which the
// high-opacity figures are read (the window maps HU monotonically and holds
// kHighOpacityMinHu); null when the input is not in HU.
StudyFigures measure(const LabelVolume& lesions, const LabelVolume& lungs, const Volume* hu_domain = nullptr);

// Everything report.json and report.html say besides the figures.
struct RunInfo {
  std::string study, input, input_kind, description;
  std::vector<std::string> warnings;  // the reader's (Volume::warnings)
  int64_t nx = 0, ny = 0, nz = 0;  // pictures of several sizes: the largest width and height
  // A study of pictures: each slice's file name and size, in slice order (the
  // report's slices name their pictures). Empty for a volume.
  struct Picture {
    std::string name;
    int64_t nx = 0, ny = 0;
  };
  std::vector<Picture> pictures;
  std::array<double, 3> spacing{1, 1, 1};
  bool spacing_known = true;  // false for pictures: sizes in mm and mL then assume 1 mm pixels
  // Where slice 0 lies in the patient: "inferior" or "superior" for an axial
  // volume, read from its slice direction; empty when unknown (pictures, one
  // slice, an oblique or non-axial stack).
  std::string first_slice;
  std::string weights, weights_fnv1a64;
  std::map<std::string, std::string> weights_metadata;
  std::string architecture = "covid-rate";  // model/segmentation_net.h names
  double width = 1;
  bool cpb = true, se = true;
  int64_t size = 512, batch = 1;
  std::string device;
  std::string precision = "f32";  // the dtype the network computed in
  double threshold = 0.5;
  int64_t slices_segmented = 0;
  double read_s = 0, lungs_s = 0, network_s = 0, write_s = 0, total_s = 0;  // total: all of them
  double startup_s = 0;  // the command's, before its first study (StudyOptions::startup_s); not in total
  // Memory in MiB, for sizing the machine that runs it: the process's peak
  // resident set so far (Linux VmHWM; in a batch run it includes the studies
  // before), and on a GPU the device allocator's peak in use so far; negative:
  // unknown (not Linux) or not used (the CPU).
  double peak_resident_mib = -1, device_peak_mib = -1;
  NetworkStages network_stages;  // inside network_s
  std::vector<std::string> outputs;  // file names written into the study folder
};

// FNV-1a 64-bit hash of `bytes`, continuing from `hash` (the basis for a new one).
inline constexpr uint64_t kFnv1a64Basis = 14695981039346656037ull;
uint64_t fnv1a64(std::string_view bytes, uint64_t hash = kFnv1a64Basis);

// FNV-1a 64-bit hash of a file's bytes as 16 hex digits: a cheap fingerprint
// that tells two weights files apart (not a cryptographic checksum).
std::string file_fnv1a64(const std::string& path);

std::string report_json(const StudyFigures& figures, const RunInfo& run);
std::string report_html(const StudyFigures& figures, const RunInfo& run);
// One line for the terminal: study, opacity both/left/right, infected slices, slices/s.
std::string summary_line(const StudyFigures& figures, const RunInfo& run);

// Infection rate per slice as bars (red: infected), the 0.5% line dashed,
// the y axis from 0 to plot_max_rate(figures); with HU figures, each bar's
// high-opacity share (high opacity pixels / lung pixels) drawn dark at its foot.
RgbImage infection_rate_plot(const StudyFigures& figures, int64_t width = 800, int64_t height = 260);
double plot_max_rate(const StudyFigures& figures);

// The slices with the largest lesion area (at most `count`, in slice order;
// none when there is no lesion).
std::vector<int64_t> most_affected_slices(const StudyFigures& figures, int64_t count);
// Slice z in the lung window with lung outlines (green right, blue left) and
// lesion outlines (red), turned to the radiological display (patient's right
// on the left, anterior at the top; radiological_slice): one tile of the
// most-affected montage.
RgbImage affected_tile(const Volume& ct, const LabelVolume& lungs, const LabelVolume& lesions, int64_t z);

}  // namespace covidrate::data
