// From a chest CT to lesion masks: the pipeline behind `covidrate segment`,
// as a library function so that tests (and other programs) can call it.
//
//   volume (HU or 8-bit pictures)
//     -> input domain (data/input_domain.h: one lung window for every source)
//     -> lung extraction (data/lungs.h: right/left labels, slices that hold lung)
//     -> each slice with lung: turned to the layout the network was trained on
//        (the MedSeg pictures' transpose), cut to the box around the lungs of
//        every slice (the MedSeg pictures are cut to the lungs; lung_crop_box), prepared
//        (data/prepare.h), segmented in batches in evaluation mode, mapped back
//        onto its own grid
//     -> probability map -> lesion mask (probability > threshold, inside the lungs)
//
// Slices without lung are not sent to the network: their probability is 0.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "data/lungs.h"
#include "data/network_stages.h"
#include "data/prepare.h"
#include "data/volume.h"
#include "model/covidrate_net.h"

namespace covidrate::data {

// The images a forward pass over `count` slices takes with bucketed batch
// shapes (SegmentOptions::bucketed_batch_shape): the smallest power of two
// >= count, at most `batch` (count <= batch).
int64_t batch_shape(int64_t count, int64_t batch);

struct SegmentOptions {
  double threshold = 0.5;  // a voxel is lesion when its probability is above this
  int64_t batch = 4;       // slices per forward pass
  // Run every forward pass at one of a few batch shapes: `batch` slices, or
  // for a study's last, partial batch (and a study with fewer slices than
  // `batch`) the smallest power of two that holds it, filled up with blank
  // slices whose outputs are dropped (batch_shape()). On CUDA, cuDNN's
  // algorithm for each convolution is chosen per input shape by timing every
  // candidate (kernels/cuda/cudnn_conv.cpp): a new batch size costs a search
  // per convolution shape, once per machine (the choices are kept on disk),
  // so shapes must not vary with every study's slice count; and blanks up to
  // the full batch cost up to a whole forward (51 slices in batches of 16: 13
  // blanks, a fifth of the study's arithmetic), so powers of two: at most
  // log2(batch) + 1 shapes, fewer blanks than real slices in the last batch.
  // Every op of the inference form works on each slice alone, so the real
  // slices' outputs do not change. `segment` turns it on with --device cuda;
  // on the CPU, where nothing is chosen per shape, blanks would only cost time.
  bool bucketed_batch_shape = false;
  int64_t size = 512;      // the network's input side
  Device device = Device::CPU;
  // The dtype the network computes in (SegmentationNet::compute_dtype): F32, or
  // BF16 with its inference form prepared in bf16.
  DType precision = DType::F32;
  // Cut each slice to the box around the study's lungs, widened by this
  // fraction of the box on every side, before it goes to the network; negative:
  // no cut (the whole slice goes in, as before). No cut either when the lung
  // extraction found only one lung. See lung_crop_box.
  double crop_margin = 0.02;
  // False: the probability map is thresholded slice by slice and not kept
  // (Segmentation::probability stays empty), one float volume less in memory;
  // segment keeps it only for --save-prob.
  bool keep_probability = true;
  // Launch batch i + 1 on the device before collecting batch i, so that the
  // device's queue never runs dry while the host collects (segment_pipeline.cpp).
  // Unset: on a GPU only (on the CPU launching is computing, and collecting at
  // once reports progress sooner). Tests set it on the CPU to run that order.
  std::optional<bool> queue_ahead = std::nullopt;
  // Called after each batch with (slices done, slices to segment); may print progress.
  std::function<void(int64_t, int64_t)> progress;
};

struct StageSeconds {
  double lungs = 0, network = 0;
  NetworkStages network_stages;
};

struct Segmentation {
  LabelVolume lungs;   // 0, 1 = right lung, 2 = left lung (the input's grid and geometry)
  Volume probability;  // lesion probability in [0, 1], 0 outside segmented slices (empty unless kept)
  LabelVolume lesions;  // 1 where probability > threshold and inside a lung
  std::vector<uint8_t> slice_has_lung;
  int64_t slices_segmented = 0;  // slices sent to the network
  // Per slice, the certainty index of the network's prediction (ops::certainty_index
  // at the network's resolution, the paper's cut-off); NaN for slices not sent to it.
  std::vector<float> certainty;
  // The input in the network's domain (to_input_domain): a lung-windowed
  // picture of the CT, which is what grey_slice would draw from the CT itself,
  // so the pictures of the study come from it and the CT need not be kept.
  Volume domain;
  StageSeconds seconds;
};

// Segments every slice of `ct` (HU or Picture8Bit; anything else is an Error
// from the input domain). The network must be in evaluation mode on
// options.device. Outputs share `ct`'s grid and geometry exactly.
Segmentation segment_volume(const Volume& ct, const SegmentationNet& net, const SegmentOptions& options);

// The CPU half of segment_volume: the input domain and the lungs. Apart so that
// a batch run can prepare the next study while the network runs this one.
struct VolumeLungs {
  Volume domain;           // to_input_domain(ct)
  LungSegmentation lungs;  // ClassicalLungExtractor().extract(ct)
  double seconds = 0;      // lung extraction
};
// Slices smaller than kMinSliceSide on a side are refused (a test pattern, a
// thumbnail: no chest CT slice is that small).
inline constexpr int64_t kMinSliceSide = 64;
VolumeLungs extract_volume_lungs(const Volume& ct);
// segment_volume on what extract_volume_lungs(ct) returned for the same `ct`.
// Only ct's grid and geometry are read here: its voxels may already be gone
// (a study keeps the domain instead, 267 MB less for 255 slices of 512 x 512).
Segmentation segment_volume(const Volume& ct, VolumeLungs prepared, const SegmentationNet& net,
                            const SegmentOptions& options);

// A rectangle of a slice, in pixels: columns [x0, x0 + nx), rows [y0, y0 + ny).
struct CropBox {
  int64_t x0 = 0, y0 = 0, nx = 0, ny = 0;
};

// Where the network looks (nx x ny, row-major, non-zero = lung). The training
// pictures (MedSeg) are cut tightly around both lungs: the lungs reach all four
// edges in 50 of 50 of them. A whole CT slice shows the lungs at about half that
// scale beside the table, the arms and air, and a network trained on the
// pictures marks healthy lung as lesion there (65.8% "opacity" on a healthy
// chest, docs/segment.md). So slices are cut to the lungs' bounding box widened
// by `margin` of the box's size on each side (clamped to the slice); the whole
// slice when there is no lung. segment_volume passes the lungs of every slice
// it segments, so all slices share one box and one scale: a box per slice
// magnified the thin basal and apical lung sections and the network read
// their partial-volume haze as ground glass (docs/segment.md, "Why the cut").
CropBox lung_crop_box(const float* lungs, int64_t nx, int64_t ny, double margin);

// The pixel permutation between slice z's own grid and the layout the network
// was trained on: network-layout pixel p holds slice pixel `result[p]`. Built by
// sending pixel indices through radiological_slice and medseg_layout, so it
// follows the volume's direction vectors exactly (flips and transposes only).
std::vector<int64_t> network_layout_order(const Volume& v, int64_t& out_nx, int64_t& out_ny);

// How every slice of a study goes to the network and comes back: the layout
// permutation and one box for all slices (see lung_crop_box).
struct NetworkView {
  std::vector<int64_t> order;  // network-layout pixel p holds slice pixel order[p]
  int64_t nx = 0, ny = 0;      // the layout's size
  CropBox box;                 // in the layout
};
// The view of `ct` for the given slices (those sent to the network): the box
// around the lungs of all of them, widened by crop_margin; the whole slice when
// crop_margin < 0 or when the lungs of these slices are not both present.
NetworkView network_view(const Volume& ct, const LabelVolume& lungs, const std::vector<int64_t>& slices,
                         double crop_margin);
// One slice's network input (size x size floats, written to `input`): the box of
// `slice` (the input domain's pixels, on the slice's own grid), prepared as the
// training pictures were (data/prepare.h). Returns where the box went.
Placement network_input(const float* slice, const NetworkView& view, int64_t size, float* input);
// The network's output for one slice (size x size probabilities) back on the
// slice's grid, inside the box: `lesion` 1 where the probability is above
// `threshold` inside the lungs, else 0; `probability` (may be null) the map,
// clamped to [0, 1]. Pixels outside the box are not touched.
void put_back_slice(const float* prediction, const Placement& placement, const NetworkView& view,
                    const uint8_t* lungs, double threshold, uint8_t* lesion, float* probability);

}  // namespace covidrate::data
