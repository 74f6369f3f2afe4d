// The shipped weights through the whole segment pipeline on real CT from
// scanners the network was not trained on: a chest with normal lungs must come
// out nearly clear, and the COVID sample must not. Before the lung-box cut and
// the synthetic-lesion fine-tuning (weights/README.md, docs/segment.md "Why the
// cut") the healthy chest came out at 65.8% opacity, above the COVID sample's
// 8.5%; this test is what keeps that from coming back.
//
// The healthy chest's slices are also where `covidrate synth` takes its healthy
// lungs from (38 of its 48 slices served as backgrounds in the fine-tuning), so
// this checks the pipeline and that the network learned them, not how it does
// on unseen healthy lungs; docs/segment.md gives the unseen Lung-PET-CT-Dx
// chest's figure too.
#include <doctest/doctest.h>

#include <string>

#include "data/read_any.h"
#include "data/report.h"
#include "data/segment_pipeline.h"
#include "model/load_weights.h"
#include "nn/safetensors.h"
#include "tests/support/test_support.h"

using namespace covidrate;

namespace {

// Every `step`-th slice of `v`, from slice `first`.
data::Volume every_nth_slice(const data::Volume& v, int64_t first, int64_t step) {
  data::Volume out = v;
  out.nz = (v.nz - first + step - 1) / step;
  out.voxels.resize(static_cast<size_t>(out.voxel_count()));
  const int64_t plane = v.nx * v.ny;
  for (int64_t z = 0; z < out.nz; ++z)
    std::copy_n(v.voxels.begin() + (first + z * step) * plane, plane, out.voxels.begin() + z * plane);
  return out;
}

double opacity_percent(const data::Volume& ct, const SegmentationNet& net, int64_t size) {
  data::SegmentOptions options;  // threshold 0.5, the default lung-box cut, as segment runs
  options.size = size;
  options.batch = 1;
  const data::Segmentation seg = data::segment_volume(ct, net, options);
  REQUIRE(seg.slices_segmented > 0);
  return data::measure(seg.lesions, seg.lungs).both.opacity_percent;
}

}  // namespace

TEST_CASE("shipped weights: a healthy chest stays nearly clear, the COVID sample does not") {
  const std::string weights = test::source_dir() + "/weights/covidrate-w1-s512.safetensors";
  const ModelSpec spec = resolve_model_spec(weights, safetensors::load_metadata(weights), {});
  const std::unique_ptr<SegmentationNet> net = load_for_inference(weights, spec, Device::CPU, DType::F32);

  // 12 of the 48 TCGA slices (every 4th, 20 mm apart): ~15 s on 2 cores.
  const data::Volume healthy = every_nth_slice(data::read_any(test::data_dir() + "/ct-healthy-tcga"), 2, 4);
  REQUIRE(healthy.nz == 12);
  const double healthy_opacity = opacity_percent(healthy, *net, spec.size);

  const data::Volume covid = data::read_any(test::source_dir() + "/examples/ricord-sample");
  REQUIRE(covid.nz == 8);
  const double covid_opacity = opacity_percent(covid, *net, spec.size);

  MESSAGE("opacity: healthy TCGA chest " << healthy_opacity << "%, RICORD COVID sample " << covid_opacity << "%");
  CHECK(healthy_opacity < 5.0);
  CHECK(covid_opacity > 5.0);
  CHECK(covid_opacity > 2.0 * healthy_opacity);
}
