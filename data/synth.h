// Synthetic lesion insertion, the COVID-Rate paper's augmentation: lesions cut
// from an infected slice are pasted into the lungs of a healthy slice, giving a
// new image/mask pair for training.
//
// Both slices are in the input domain (data/input_domain.h) and in the
// radiological orientation (radiological_slice), so that grey levels and
// anatomy agree before any pixel moves. Slices of different sizes are aligned
// by their lung bounding boxes: the infected lungs' box is scaled onto the
// healthy lungs' box, so a lesion in the lower right lung lands in the lower
// right lung.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/volume.h"

namespace covidrate::data {

// One slice (nz = 1) with what is known about it.
struct AnnotatedSlice {
  Volume image;   // input-domain values 0..255
  Volume lungs;   // 0 outside, non-zero inside a lung (LungLabel values)
  Volume lesion;  // 0/1 lesion mask; empty (nx = 0) for a healthy slice
  std::string name;  // an infected slice: its picture's stem ("12"); a healthy one: "slice K" of its series
};

struct SyntheticPair {
  Volume image;  // the healthy slice with the lesions pasted in (domain values)
  Volume mask;   // 0/1: lesion AND healthy lung
  double infection_rate = 0;  // lesion pixels / healthy lung pixels
};

// Inserts the infected slice's lesions into the healthy slice:
//   1. map every pixel of the healthy lung box to the infected lung box;
//   2. synthetic mask = mapped lesion mask AND healthy lung mask (what falls
//      outside the healthy lungs is trimmed);
//   3. image = the healthy slice, with the mapped infected pixels (bilinear)
//      in place of the healthy pixels under the mask.
// Returns nothing when the infection rate is <= min_infection_rate (the paper
// drops those: too little lesion to teach anything) or a slice has no lung.
std::optional<SyntheticPair> insert_lesions(const AnnotatedSlice& infected, const AnnotatedSlice& healthy,
                                            double min_infection_rate = 0.01);

// Bounding box of the non-zero pixels of a one-slice mask: [x0, x1) x [y0, y1).
struct Box {
  int64_t x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  bool empty() const { return x1 <= x0 || y1 <= y0; }
};
Box nonzero_box(const Volume& mask);

// The part [box] of a one-slice volume (clipped to the image).
Volume crop(const Volume& v, Box box);

// The infected sources: a MedSeg-layout training folder (images/*.jpg|png and
// masks/<same name>.png, lesion > 0), each slice turned radiological, its lungs
// found by the classical extractor on the 8-bit picture. `limit` > 0 reads only
// the first `limit` slices (in name order). Files are named in errors.
// `only`: when not empty, just the pictures with these stems (each must exist).
std::vector<AnnotatedSlice> load_infected_slices(const std::string& train_dir, int limit = 0,
                                                 const std::vector<std::string>& only = {});

// The healthy targets: the slices of a HU series (DICOM folder or NIfTI) whose
// lungs cover at least `min_lung_fraction` of the series' largest lung slice
// (the apex and base hold too little lung to host lesions), mapped into the
// domain and turned radiological. Lungs come from the 3-D classical extraction.
std::vector<AnnotatedSlice> load_healthy_slices(const std::string& series, double min_lung_fraction = 0.4);

}  // namespace covidrate::data
