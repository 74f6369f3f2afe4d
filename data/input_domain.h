// The one input domain: every slice reaches the network as an 8-bit-like picture
// of a fixed lung window, whatever it came from.
//
//  - Windowed 8-bit pictures (the MedSeg JPG slices) are already in it.
//  - Hounsfield volumes (DICOM, NIfTI CT) are mapped by the window below, which
//    was estimated from the MedSeg pictures themselves (docs/data.md shows how:
//    the grey levels of air, lung, fat and soft tissue in the pictures against
//    their Hounsfield values in the DICOM series).
//
// Values in the domain are floats in [0, 255]; the network's own per-image
// standardization (mean 0, std 1, as in the paper) comes after, in standardize().
#pragma once
#include <cstdint>

#include "data/volume.h"

namespace covidrate::data {

// The lung window of the domain, in HU: value 0 at low_hu, 255 at high_hu.
struct LungWindow {
  float low_hu;
  float high_hu;
};
// The window the MedSeg pictures appear to use (measured: see docs/data.md).
inline constexpr LungWindow kMedSegWindow{-1250.f, 300.f};

// HU -> domain value in [0, 255] (clamped outside the window).
float hu_to_domain(float hu, LungWindow w = kMedSegWindow);
// Domain value -> HU; exact inside the window, only the window's edge outside it.
float domain_to_hu(float value, LungWindow w = kMedSegWindow);

// The volume in the domain: HU volumes mapped through the window, 8-bit
// pictures clamped to [0, 255] and otherwise unchanged. The result's intensity
// is Picture8Bit. Labels and scanner units (MR), NaN or infinite voxels, and
// the first volume of a 4-D file are refused with an Error that names the source.
Volume to_input_domain(const Volume& v, LungWindow w = kMedSegWindow);

// The paper's per-image normalization, in place: (x - mean) / std over the
// `n` values (std floored at 1e-6 so that a blank slice stays finite).
void standardize(float* values, int64_t n);

// Intensity summary of a set of domain values, used to compare sources.
struct DomainStats {
  double mean = 0, std = 0;
  double p05 = 0, p25 = 0, p50 = 0, p75 = 0, p95 = 0;  // percentiles
  int64_t count = 0;
};
// Statistics of `values[i]` over the pixels where `mask` is non-zero (all
// pixels when mask is null).
DomainStats domain_stats(const float* values, const uint8_t* mask, int64_t n);

// Orientation. The radiological display puts the patient's anterior at the top
// and the patient's right on the image's left. The MedSeg training pictures are
// transposed against it (anterior at the left, patient right at the top); this
// sets a one-slice picture's direction vectors to say so, so that geometry-aware
// code (lung sides, slice alignment) reads them correctly.
void set_medseg_picture_orientation(VolumeGrid& picture);

// A radiological one-slice volume laid out like the MedSeg pictures (the
// transpose), with its direction vectors saying so.
Volume medseg_layout(const Volume& radiological);

// Copies slice `z` of `v` into a one-slice volume resampled to the radiological
// display (x = towards patient left, y = towards posterior) by flips and/or a
// transpose chosen from the direction vectors; exact, no interpolation. The
// result keeps spacing but not the origin: it is for pixel work, not for
// placing the slice back in patient space. For Volume and LabelVolume.
template <class T> BasicVolume<T> radiological_slice(const BasicVolume<T>& v, int64_t z);

// A one-slice picture in the MedSeg layout (a PNG/JPG slice or a mask of one,
// as read, with or without its orientation set) in the radiological display:
// the transpose. For the overviews of eval, synth and pseudo-label, drawn the
// way segment draws its montage.
template <class T> BasicVolume<T> medseg_picture_displayed(BasicVolume<T> picture) {
  set_medseg_picture_orientation(picture);
  return radiological_slice(picture, 0);
}

}  // namespace covidrate::data
