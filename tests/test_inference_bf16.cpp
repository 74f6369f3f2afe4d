// bf16 inference against f32 on a real CT, on the CPU: the shipped full-width
// network segments three slices of examples/ricord-sample through the whole
// pipeline (lungs, layout, network, mapping back) in both precisions. (Three,
// not all eight: the bf16 reference path makes each slice cost ~5 s here.)
// The CPU bf16 ops are the reference path (widen to f32, compute, round each
// result to bf16), so this is what the GPU's bf16 must also reach.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "data/read_any.h"
#include "data/segment_pipeline.h"
#include "model/load_weights.h"
#include "nn/safetensors.h"
#include "tests/support/test_support.h"

using namespace covidrate;

TEST_CASE("bf16 inference finds the lesions f32 finds on ricord-sample slices") {
  data::Volume ct = data::read_any(test::source_dir() + "/examples/ricord-sample");
  REQUIRE(ct.nz == 8);
  constexpr int64_t kSlices = 3;
  ct.nz = kSlices;
  ct.voxels.resize(static_cast<size_t>(ct.voxel_count()));
  const std::string weights = test::source_dir() + "/weights/covidrate-w1-s512.safetensors";
  const ModelSpec spec = resolve_model_spec(weights, safetensors::load_metadata(weights), {});
  const std::unique_ptr<SegmentationNet> net = load_for_inference(weights, spec, Device::CPU, DType::F32);

  data::SegmentOptions options;  // threshold 0.5, batch 4, as segment runs
  options.size = spec.size;
  const data::Segmentation f32 = data::segment_volume(ct, *net, options);
  net->prepare_inference(DType::BF16);
  options.precision = DType::BF16;
  const data::Segmentation bf16 = data::segment_volume(ct, *net, options);
  REQUIRE(f32.slices_segmented == kSlices);
  REQUIRE(bf16.slices_segmented == kSlices);

  // Dice of the two lesion masks (voxels inside the lungs with p > 0.5), and
  // the probability differences over every voxel.
  int64_t both = 0, only_f32 = 0, only_bf16 = 0;
  double max_diff = 0, sum_diff = 0;
  int64_t nonfinite = 0;
  for (size_t i = 0; i < f32.lesions.voxels.size(); ++i) {
    const bool a = f32.lesions.voxels[i] > 0, b = bf16.lesions.voxels[i] > 0;
    both += a && b;
    only_f32 += a && !b;
    only_bf16 += b && !a;
    const double d = std::abs(double{f32.probability.voxels[i]} - double{bf16.probability.voxels[i]});
    nonfinite += !std::isfinite(d);
    max_diff = std::max(max_diff, d);
    sum_diff += d;
  }
  REQUIRE(nonfinite == 0);
  const double dice = 2.0 * both / (2.0 * both + only_f32 + only_bf16);
  MESSAGE("ricord-sample, " << kSlices << " slices: " << both + only_f32 << " lesion voxels in f32, Dice(bf16, f32) = " << dice
                                      << " (" << only_f32 << " only in f32, " << only_bf16
                                      << " only in bf16); |p_bf16 - p_f32| max " << max_diff << ", mean "
                                      << sum_diff / static_cast<double>(f32.probability.voxels.size()));
  CHECK(both + only_f32 > 10000);  // the sample has lesions to agree on
  CHECK(dice >= 0.98);
  CHECK(max_diff > 0);  // bf16 really ran
}
