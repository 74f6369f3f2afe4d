// The inference form on the GPU (CovidRateNet::prepare_inference: BN folded
// once, weights cast): the shipped full-width network segments the eight
// slices of examples/ricord-sample through the whole pipeline,
//   CUDA f32 form  against CUDA evaluation mode (BN kernel, nothing folded),
//   CUDA bf16 form against the CPU bf16 reference (the same rounding points;
//                  only summation order and cuDNN's algorithms differ),
//   CUDA bf16 form against CUDA f32 (what bf16 costs in agreement).
// Skipped without a GPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <string>

#include "data/read_any.h"
#include "data/segment_pipeline.h"
#include "kernels/cuda/conv_direct.h"
#include "model/blocks.h"
#include "model/load_weights.h"
#include "nn/safetensors.h"
#include "data/nifti.h"
#include "tests/cuda/require_gpu.h"
#include "tests/support/run_covidrate.h"
#include "tests/support/test_support.h"
#include "tests/temp_files.h"

using namespace covidrate;

namespace {

struct Agreement {
  double dice = 0;      // of the two lesion masks
  double max_diff = 0;  // max |p_a - p_b| over every voxel
  double mean_diff = 0;
  int64_t lesion_voxels = 0;  // in b
  int64_t nonfinite = 0;      // probabilities of a that are NaN or Inf
};

// Bytes of pinned host memory handed out and not yet given back.
size_t pinned_host_in_use() { return host_staging_allocator(Device::CUDA).stats().in_use; }

Agreement compare(const data::Segmentation& a, const data::Segmentation& b) {
  Agreement r;
  int64_t both = 0, only_a = 0, only_b = 0;
  double sum = 0;
  for (size_t i = 0; i < a.lesions.voxels.size(); ++i) {
    const bool in_a = a.lesions.voxels[i] > 0, in_b = b.lesions.voxels[i] > 0;
    both += in_a && in_b;
    only_a += in_a && !in_b;
    only_b += in_b && !in_a;
    r.nonfinite += !std::isfinite(a.probability.voxels[i]);
    const double d = std::abs(double{a.probability.voxels[i]} - double{b.probability.voxels[i]});
    r.max_diff = std::max(r.max_diff, d);
    sum += d;
  }
  r.dice = 2.0 * both / std::max<double>(1, 2.0 * both + only_a + only_b);
  r.mean_diff = sum / static_cast<double>(a.probability.voxels.size());
  r.lesion_voxels = both + only_b;
  return r;
}

struct Setup {
  data::Volume ct = data::read_any(test::source_dir() + "/examples/ricord-sample");
  std::string weights = test::source_dir() + "/weights/covidrate-w1-s512.safetensors";
  ModelSpec spec = resolve_model_spec(weights, safetensors::load_metadata(weights), {});

  // The sample through segment_volume, on `device`, computing in `precision`;
  // prepared = false: plain evaluation mode (only for f32).
  data::Segmentation segment(Device device, DType precision, bool prepared = true,
                             const std::function<void(data::SegmentOptions&)>& adjust = {}) const {
    const std::unique_ptr<SegmentationNet> net = load_for_inference(weights, spec, device, precision);
    if (!prepared) {
      net->set_training(true);  // drops the inference form
      net->set_training(false);
    }
    data::SegmentOptions options;
    options.size = spec.size;
    options.device = device;
    options.precision = precision;
    if (adjust) adjust(options);
    return data::segment_volume(ct, *net, options);
  }
};

// The segment options of a queue test: batches of `batch`, the last one
// padded to a power of two or not, queued ahead or collected one at a time.
std::function<void(data::SegmentOptions&)> with(int64_t batch, bool bucketed, bool queue_ahead) {
  return [=](data::SegmentOptions& o) {
    o.batch = batch;
    o.bucketed_batch_shape = bucketed;
    o.queue_ahead = queue_ahead;
  };
}

}  // namespace

TEST_CASE("the CUDA inference form agrees with evaluation mode, the CPU bf16 reference and f32") {
  const Setup s;
  REQUIRE(s.ct.nz == 8);
  const data::Segmentation cuda_eval = s.segment(Device::CUDA, DType::F32, false);
  const data::Segmentation cuda_f32 = s.segment(Device::CUDA, DType::F32);
  const data::Segmentation cuda_bf16 = s.segment(Device::CUDA, DType::BF16);
  const data::Segmentation cpu_bf16 = s.segment(Device::CPU, DType::BF16);
  REQUIRE(cuda_bf16.slices_segmented == 8);

  const auto report = [](const char* what, const Agreement& a) {
    MESSAGE(std::string(what) << ": Dice " << a.dice << " over " << a.lesion_voxels << " lesion voxels, |dp| max " << a.max_diff
                 << ", mean " << a.mean_diff);
  };
  // Folding BN changes only the rounding of f32 arithmetic (on the CPU:
  // max |dp| 9e-7 on a MedSeg slice, test_inference_form).
  const Agreement folded = compare(cuda_f32, cuda_eval);
  report("CUDA f32 form vs CUDA evaluation mode", folded);
  CHECK(folded.nonfinite == 0);
  CHECK(folded.lesion_voxels > 10000);
  CHECK(folded.dice >= 0.999);
  CHECK(folded.max_diff <= 1e-3);

  // Both round every op's output to bf16; a sum in another order can round to
  // the neighbouring bf16 value (2^-8 relative), and ~30 layers carry that
  // along, so probabilities differ by up to a few 1e-2 at the outlines
  // (f32 vs bf16 on the CPU: max 0.035), while the masks stay the same.
  const Agreement reference = compare(cuda_bf16, cpu_bf16);
  report("CUDA bf16 vs CPU bf16 reference", reference);
  CHECK(reference.nonfinite == 0);
  CHECK(reference.dice >= 0.99);
  CHECK(reference.mean_diff <= 1e-3);

  // What the CPU measures between bf16 and f32 (Dice 0.9991), with a margin.
  const Agreement precision = compare(cuda_bf16, cuda_f32);
  report("CUDA bf16 vs CUDA f32", precision);
  CHECK(precision.dice >= 0.98);
  CHECK(precision.max_diff > 0);  // bf16 really ran
}

TEST_CASE("segment on CUDA: batches queued ahead, bucketed or not, collected at once, give the same volumes") {
  // The 8 slices in batches of 3 (3 + 3 + 2) with and without bucketed shapes
  // (2 is a power of two: no blank), in batches of 5 (5 + 3, the last padded
  // to 4 with a blank), one at a time (8 batches through the same few pinned
  // blocks), and in batches of 4 collected one at a time (the CPU's order):
  // the inference form treats each slice alone, so every run computes the
  // same probabilities up to the convolution algorithms cuDNN picks per batch
  // shape. Every pinned buffer is back in its cache afterwards.
  const Setup s;
  const size_t pinned_in_use = pinned_host_in_use();
  const data::Segmentation at_once = s.segment(Device::CUDA, DType::F32, true, with(4, false, false));
  REQUIRE(at_once.slices_segmented == 8);
  for (const auto& [batch, bucketed] :
       {std::pair<int64_t, bool>{3, false}, {3, true}, {5, true}, {1, false}, {4, false}}) {
    CAPTURE(batch);
    CAPTURE(bucketed);
    const data::Segmentation ahead = s.segment(Device::CUDA, DType::F32, true, with(batch, bucketed, true));
    const Agreement a = compare(ahead, at_once);
    CHECK(a.nonfinite == 0);
    CHECK(a.dice >= 0.999);
    CHECK(a.max_diff <= 1e-3);
    REQUIRE(ahead.certainty.size() == at_once.certainty.size());
    for (size_t z = 0; z < ahead.certainty.size(); ++z) CHECK(ahead.certainty[z] == doctest::Approx(at_once.certainty[z]).epsilon(1e-3));
  }
  CHECK(pinned_host_in_use() == pinned_in_use);
}

TEST_CASE("segment on CUDA in bf16: batches queued ahead, the last one padded, give the volumes of one batch at once") {
  // As above in bf16, the precision segment runs in on a GPU: 5 + 3 (the 3
  // padded to 4 with a blank) and one slice at a time, against batches of 4
  // collected one at a time. bf16 rounds per op, and cuDNN may pick other
  // algorithms per batch shape, so the tolerance is the CUDA-vs-CPU bf16 one.
  const Setup s;
  const size_t pinned_in_use = pinned_host_in_use();
  const data::Segmentation at_once = s.segment(Device::CUDA, DType::BF16, true, with(4, false, false));
  REQUIRE(at_once.slices_segmented == 8);
  for (const auto& [batch, bucketed] : {std::pair<int64_t, bool>{5, true}, {1, false}}) {
    CAPTURE(batch);
    const data::Segmentation ahead = s.segment(Device::CUDA, DType::BF16, true, with(batch, bucketed, true));
    const Agreement a = compare(ahead, at_once);
    MESSAGE("bf16, batch " << batch << ": Dice " << a.dice << ", |dp| max " << a.max_diff << ", mean " << a.mean_diff);
    CHECK(a.nonfinite == 0);
    CHECK(a.dice >= 0.99);
    CHECK(a.mean_diff <= 1e-3);
  }
  CHECK(pinned_host_in_use() == pinned_in_use);
}

TEST_CASE("the decoders' concatenation in place (batch 1) gives what the copied one gives, f32 and bf16, cuDNN or direct") {
  // At batch 1 a decoder writes its two halves straight into the joined map
  // (model/blocks.cpp, DecoderBlock); with it off they are copied. The
  // transition that writes the second half runs in the direct kernel, or in
  // cuDNN (COVIDRATE_DIRECT_CONV=0) writing at an offset of C x H x W.
  const Setup s;
  const auto one_at_a_time = [](data::SegmentOptions& o) { o.batch = 1; };
  for (const DType precision : {DType::F32, DType::BF16}) {
    for (const bool direct : {true, false}) {
      CAPTURE(to_string(precision));
      CAPTURE(direct);
      cuda::set_direct_conv(direct);
      model::set_decoder_concat_in_place(true);
      const data::Segmentation in_place = s.segment(Device::CUDA, precision, true, one_at_a_time);
      model::set_decoder_concat_in_place(false);
      const data::Segmentation copied = s.segment(Device::CUDA, precision, true, one_at_a_time);
      model::set_decoder_concat_in_place(true);
      cuda::set_direct_conv(std::nullopt);
      REQUIRE(in_place.slices_segmented == 8);
      const Agreement a = compare(in_place, copied);
      MESSAGE(to_string(precision) << (direct ? ", direct" : ", cuDNN") << ": in place vs copied: Dice " << a.dice
                                   << ", |dp| max " << a.max_diff);
      CHECK(a.nonfinite == 0);
      // The same arithmetic; only the algorithm cuDNN picks for a view may differ.
      CHECK(a.dice >= (precision == DType::F32 ? 0.999 : 0.99));
      CHECK(a.mean_diff <= (precision == DType::F32 ? 1e-5 : 1e-3));
    }
  }
}

TEST_CASE("batch segment on CUDA: reading ahead and writing behind (--prefetch) change nothing in the masks") {
  // Three studies cut from the sample (8, 5 and 1 slices: last batches of 4,
  // 1 and 1 at --batch 4), once with the next study read and the last written
  // while the network runs, once one after another. The arithmetic is the same
  // batches in the same shapes, so the masks must agree (to the voxel, unless
  // cuDNN chose another algorithm for a shape between the two runs).
  // NIfTI files, not copies of the DICOM folder: folders that share a
  // StudyInstanceUID are one study to segment (docs/segment.md), which made
  // this test's first version one study of 8 slices.
  namespace fs = std::filesystem;
  test::TempDir dir;
  const data::Volume sample =
      data::read_any((fs::path(test::source_dir()) / "examples" / "ricord-sample").string());
  REQUIRE(sample.nz == 8);
  const std::pair<const char*, int64_t> studies[] = {{"a", 8}, {"b", 5}, {"c", 1}};
  fs::create_directories(dir.file("studies"));
  for (const auto& [name, count] : studies) {
    data::Volume cut = data::same_grid(sample, sample.intensity, 0.f, count);
    std::copy_n(sample.voxels.begin(), cut.voxels.size(), cut.voxels.begin());
    data::write_nifti(dir.file("studies/" + std::string(name) + ".nii.gz"), cut, data::NiftiType::Int16);
  }
  for (const char* prefetch : {"on", "off"}) {
    const test::ProgramRun run =
        test::run_covidrate(dir, "segment " + dir.file("studies") + " --device cuda --precision bf16 --batch 4 --prefetch " +
                                     prefetch + " --out " + dir.file(std::string("out-") + prefetch));
    REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  }
  for (const auto& [name, count] : studies) {
    CAPTURE(name);
    const data::Volume on = data::read_nifti(dir.file("out-on/" + std::string(name) + "/lesion_mask.nii.gz"));
    const data::Volume off = data::read_nifti(dir.file("out-off/" + std::string(name) + "/lesion_mask.nii.gz"));
    REQUIRE(on.nz == static_cast<int64_t>(count));
    int64_t both = 0, either = 0;
    for (size_t i = 0; i < on.voxels.size(); ++i) {
      both += on.voxels[i] > 0 && off.voxels[i] > 0;
      either += on.voxels[i] > 0 || off.voxels[i] > 0;
    }
    CHECK(either > 0);
    CHECK(static_cast<double>(both) >= 0.999 * static_cast<double>(either));
  }
}

