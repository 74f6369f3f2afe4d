// Lung extraction: which voxels of a chest CT are right lung, left lung, or
// neither; and which slices hold any lung at all (later stages skip the others).
//
// LungExtractor is the seam for a learned lung model: anything that maps a CT
// volume (HU or 8-bit picture) to a LungSegmentation can stand in for the
// classical extractor here.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/volume.h"
#include "nn/error.h"

namespace covidrate::data {

enum LungLabel : uint8_t { kNoLung = 0, kRightLung = 1, kLeftLung = 2 };

struct LungSegmentation {
  // Same grid and geometry as the input, Intensity::Label, values LungLabel.
  // Right and left are the patient's, read from the volume's direction vectors
  // (for a picture without geometry: right = the image's left, as displayed).
  LabelVolume labels;
  // slice_has_lung[z] is 1 when slice z holds enough lung to be worth segmenting.
  std::vector<uint8_t> slice_has_lung;

  int64_t count(LungLabel which) const;  // voxels with that label
};

class LungExtractor {
 public:
  virtual ~LungExtractor() = default;
  virtual std::string name() const = 0;
  // `ct` holds HU or an 8-bit windowed picture (Intensity says which).
  virtual LungSegmentation extract(const Volume& ct) const = 0;
};

// Thresholds and sizes of the classical method. Thresholds are in HU and reach
// 8-bit pictures through the input domain's window (data/input_domain.h).
// Areas are fractions of the slice's body area, so the same numbers serve
// 0.7 mm DICOM pixels and resized pictures of unknown pixel size.
struct ClassicalLungOptions {
  float body_min_hu = -500;     // body = above this, largest component, holes filled
  float air_max_hu = -250;      // lung candidates = below this, inside the body: aerated lung and
                                // ground glass (-700..-300 HU), not fat (-100) or soft tissue
  double cropped_border_fraction = 0.25;  // a body covering more of the image border than this was cropped
  double min_cut_lung_area = 0.03;  // in a cropped picture, dark regions at the border bigger than this
                                    // fraction of the picture are lungs, smaller ones air in a corner
  double min_part_area = 0.0008;  // air pieces smaller than this are noise
  double airway_max_area = 0.012; // central air pieces smaller than this are trachea, bronchi or oesophagus
  double airway_band = 0.12;    // "central": centroid within this fraction of the body width from its middle
  float airway_max_hu = -950;   // the airways' lumen is pure air; aerated lung (-900..-700) seldom is
  double airway_wall = 0.008;   // the airways' wall (this fraction of the body width, about 3 px at 0.7 mm)
                                // stays out of the lung when the closing reaches over it
  float gas_max_hu = -980;      // pure gas reads below this; aerated lung, with its vessels and septa, seldom does
  double max_gas_fraction = 0.35;  // one HU slice alone (no 3-D rule): an air piece with more of its pixels
                                   // below gas_max_hu is stomach or bowel gas, not lung (measured in docs/data.md)
  double min_lung_area = 0.004; // a slice holds lung when its lungs cover at least this much
  double max_lung_fraction = 0.9;  // ... and at most this fraction of the whole slice: lungs lie in a chest,
                                   // beside a mediastinum and inside a chest wall. Noise or a uniform picture
                                   // comes out as "lung" everywhere (measured: at most 0.78 of the picture
                                   // over 250 MedSeg pictures, which are cut close around the lungs; at most
                                   // 0.20 of a slice in the CT series; docs/data.md)
  double min_part_volume = 0.1; // 3-D air components below this fraction of the largest are gas elsewhere
  double closing_radius = 0.04; // closing of each lung's outline, as a fraction of the body width
  double max_hole_area = 0.02;  // holes in a lung up to this size are vessels or lesions and are filled;
                                // bigger ones are the diaphragm's dome seen through the lung base
  double min_dent_area = 0.0002;   // dents on a lung's chest-wall side at least this big are dense lung
                                   // (consolidation) and are added back; smaller ones are outline jitter
  double mediastinum_band = 0.08;  // ... except within this fraction of the body width from its middle:
                                   // soft tissue there is sternum, spine or mediastinum
  int threads = 0;              // 0: the engine's count (COVIDRATE_THREADS, else all hardware threads)
};

// Thresholding, body and airway removal, left/right split, hole filling,
// closing and chest-wall-side dents, slice by slice, with a 3-D component check
// in volumes (a gas-purity check in single HU slices). Measured in
// docs/data.md against expert masks.
class ClassicalLungExtractor final : public LungExtractor {
 public:
  explicit ClassicalLungExtractor(ClassicalLungOptions options = {}) : options_(options) {}
  std::string name() const override { return "classical"; }
  LungSegmentation extract(const Volume& ct) const override;
  // The same when the caller already holds to_input_domain(ct), as segment
  // does: the mapping is not done twice.
  LungSegmentation extract(const Volume& ct, const Volume& domain) const;

 private:
  ClassicalLungOptions options_;
};

// Voxels of label `which` in a, in b, and in both (two label volumes of the
// same grid); Dice = 2 both / (in_a + in_b), 1 when neither has the label.
// Counts of several volumes add up to their pooled Dice.
struct LabelOverlap {
  int64_t in_a = 0, in_b = 0, both = 0;
  double dice() const { return in_a + in_b == 0 ? 1.0 : 2.0 * double(both) / double(in_a + in_b); }
  LabelOverlap& operator+=(const LabelOverlap& o) {
    in_a += o.in_a, in_b += o.in_b, both += o.both;
    return *this;
  }
};
// a and b: a mask read from a file (floats) or made here (bytes), in any pairing.
template <class A, class B> LabelOverlap overlap(const BasicVolume<A>& a, const BasicVolume<B>& b, float which) {
  CR_CHECK(a.nx == b.nx && a.ny == b.ny && a.nz == b.nz,
           "dice: grids differ (" << a.nx << "x" << a.ny << "x" << a.nz << " vs " << b.nx << "x" << b.ny << "x"
                                  << b.nz << ")");
  LabelOverlap o;
  for (int64_t i = 0; i < a.voxel_count(); ++i) {
    const bool x = static_cast<float>(a.voxels[i]) == which, y = static_cast<float>(b.voxels[i]) == which;
    o.both += x && y;
    o.in_a += x;
    o.in_b += y;
  }
  return o;
}
// Dice overlap of label `which` between two label volumes of the same grid.
template <class A, class B> double dice(const BasicVolume<A>& a, const BasicVolume<B>& b, float which) {
  return overlap(a, b, which).dice();
}

}  // namespace covidrate::data
