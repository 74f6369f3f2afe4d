// The CPU stages of `covidrate segment` around the network, on the real RICORD
// series (255 slices of 512 x 512, JPEG Lossless DICOM): on a GPU these, not
// the network, bound a study's time (docs/benchmarks.md, docs/segment.md).
//   read          read_dicom_series: parse, decode (GDCM), sort, rescale to HU
//   domain        to_input_domain: HU -> the one lung window
//   lungs         ClassicalLungExtractor::extract(ct, domain), as segment calls it
//   network_input every slice with lung cut to the lungs' box, resized to 512 x 512
//                 and standardized (network_input), on the CPU pool as segment does
//   put_back      every slice's 512 x 512 output back on its grid, thresholded in
//                 the lungs (put_back_slice), on the CPU pool
//                 (these two run beside the forward pass on a GPU: per batch of 16
//                 they must take less than the forward's ~24 ms on an H200)
//   write_mask    write_nifti of a uint8 mask, .nii.gz (lesion_mask.nii.gz)
//   write_prob    write_nifti of a float32 map, .nii.gz (probability.nii.gz, --save-prob)
//   figures       per-slice figures, the infection-rate plot and the montage of
//                 the six most affected slices, both written as PNG
// The mask stands in for the network's: lung voxels above -500 HU (ground
// glass and denser), so that its size and compressibility are those of a real
// COVID lesion mask, without weights.
//
//   build/bench_pipeline [--benchmark_filter=lungs]
//
// Data: $COVIDRATE_DATA, else ../shared/data beside the source tree (its
// ct-covid-ricord), or the DICOM folder $COVIDRATE_PIPELINE_SERIES; without
// it the program says so and exits 0. Counters: slices/s (wall), cpu_ms/slice
// (process CPU time, all threads: the work, nearly independent of other load) and
// peak_MB (how far the resident set's peak rose above the resident set before the
// stage: its temporary memory and its result, with the study's volumes already held).
#include <benchmark/benchmark.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "bench/process_stats.h"
#include "data/dicom.h"
#include "data/image2d.h"
#include "data/input_domain.h"
#include "data/lungs.h"
#include "data/nifti.h"
#include "data/overlay.h"
#include "data/report.h"
#include "data/segment_pipeline.h"
#include "kernels/cpu/threads.h"

using namespace covidrate;
using namespace covidrate::data;
namespace fs = std::filesystem;

namespace {

// The RICORD series of ../shared/data, or COVIDRATE_PIPELINE_SERIES: another
// DICOM folder (e.g. every fourth slice, the volume tools/gpu_check.sh carries).
std::string series_path() {
  const char* series = std::getenv("COVIDRATE_PIPELINE_SERIES");
  if (series && *series) return series;
  const char* env = std::getenv("COVIDRATE_DATA");
  const std::string root = env && *env ? env : std::string(COVIDRATE_SOURCE_DIR) + "/../shared/data";
  return root + "/ct-covid-ricord";
}

// Where the writing stages write; removed at the end.
const fs::path& scratch() {
  static const fs::path path = fs::temp_directory_path() / ("covidrate-bench-pipeline-" + std::to_string(::getpid()));
  return path;
}

// Everything the stages read, made once.
struct Study {
  Volume ct, domain, probability;
  LabelVolume lesions;
  LungSegmentation lungs;
  fs::path scratch;
  // What the network stage sees: the slices with lung, their view, their inputs.
  std::vector<int64_t> with_lung;
  NetworkView view;
  std::vector<float> inputs;  // 512 x 512 per slice with lung
  std::vector<Placement> placements;
};
constexpr int64_t kSize = 512;

const Study& study() {
  static const Study s = [] {
    Study r;
    r.ct = read_dicom_series(series_path());
    r.domain = to_input_domain(r.ct);
    r.lungs = ClassicalLungExtractor().extract(r.ct, r.domain);
    r.lesions = same_grid<uint8_t>(r.ct, Intensity::Label);
    r.probability = same_grid(r.ct, Intensity::Label);
    for (int64_t i = 0; i < r.ct.voxel_count(); ++i) {
      const bool lung = r.lungs.labels.voxels[i] != kNoLung;
      r.lesions.voxels[i] = lung && r.ct.voxels[i] > -500.f;
      r.probability.voxels[i] = lung ? r.domain.voxels[i] / 255.f : 0.f;
    }
    r.scratch = scratch();
    fs::create_directories(r.scratch);
    for (int64_t z = 0; z < r.ct.nz; ++z)
      if (r.lungs.slice_has_lung[z]) r.with_lung.push_back(z);
    r.view = network_view(r.ct, r.lungs.labels, r.with_lung, SegmentOptions{}.crop_margin);
    r.inputs.resize(r.with_lung.size() * kSize * kSize);
    r.placements.resize(r.with_lung.size());
    for (size_t k = 0; k < r.with_lung.size(); ++k)
      r.placements[k] = network_input(r.domain.slice(r.with_lung[k]), r.view, kSize, &r.inputs[k * kSize * kSize]);
    // The stand-in output: the input squashed to (0, 1), about half of it above 0.5.
    for (float& v : r.inputs) v = 1.f / (1.f + std::exp(-v));
    return r;
  }();
  return s;
}

// Runs `stage` once per iteration and counts its CPU time and peak memory.
template <typename Stage>
void run(benchmark::State& state, Stage stage, bool per_slice_with_lung = false) {
  const Study& s = study();
  const double rss_before = bench::proc_status_bytes("VmRSS");
  bench::reset_peak_rss();
  double cpu = 0;
  for (auto _ : state) {
    const double start = bench::process_cpu_seconds();
    stage(s);
    cpu += bench::process_cpu_seconds() - start;
  }
  const double slices = double(per_slice_with_lung ? s.with_lung.size() : s.ct.nz) * double(state.iterations());
  state.counters["slices/s"] = benchmark::Counter(slices, benchmark::Counter::kIsRate);
  state.counters["cpu_ms/slice"] = 1000.0 * cpu / slices;
  state.counters["peak_MB"] = 1e-6 * (bench::proc_status_bytes("VmHWM") - rss_before);
}

void BM_read(benchmark::State& state) {
  run(state, [](const Study&) { benchmark::DoNotOptimize(read_dicom_series(series_path())); });
}
void BM_domain(benchmark::State& state) {
  run(state, [](const Study& s) { benchmark::DoNotOptimize(to_input_domain(s.ct)); });
}
void BM_lungs(benchmark::State& state) {
  run(state, [](const Study& s) { benchmark::DoNotOptimize(ClassicalLungExtractor().extract(s.ct, s.domain)); });
}
void BM_network_input(benchmark::State& state) {
  std::vector<float> out(study().inputs.size());
  run(
      state,
      [&out](const Study& s) {
        cpu::parallel_for(static_cast<int64_t>(s.with_lung.size()), 1, [&](int64_t begin, int64_t end) {
          for (int64_t k = begin; k < end; ++k)
            network_input(s.domain.slice(s.with_lung[k]), s.view, kSize, &out[k * kSize * kSize]);
        });
        benchmark::DoNotOptimize(out.data());
      },
      true);
}
void BM_put_back(benchmark::State& state) {
  LabelVolume lesions = same_grid<uint8_t>(study().ct, Intensity::Label);
  Volume probability = same_grid(study().ct, Intensity::Picture8Bit);
  run(
      state,
      [&](const Study& s) {
        cpu::parallel_for(static_cast<int64_t>(s.with_lung.size()), 1, [&](int64_t begin, int64_t end) {
          for (int64_t k = begin; k < end; ++k) {
            const int64_t z = s.with_lung[k];
            put_back_slice(&s.inputs[k * kSize * kSize], s.placements[k], s.view, s.lungs.labels.slice(z), 0.5,
                           lesions.slice(z), probability.slice(z));
          }
        });
        benchmark::DoNotOptimize(lesions.voxels.data());
      },
      true);
}
void BM_write_mask(benchmark::State& state) {
  run(state, [](const Study& s) { write_nifti((s.scratch / "mask.nii.gz").string(), s.lesions); });
  state.counters["file_MB"] = double(fs::file_size(study().scratch / "mask.nii.gz")) / 1e6;
}
void BM_write_prob(benchmark::State& state) {
  run(state, [](const Study& s) {
    write_nifti((s.scratch / "prob.nii.gz").string(), s.probability, NiftiType::Float32);
  });
  state.counters["file_MB"] = double(fs::file_size(study().scratch / "prob.nii.gz")) / 1e6;
}
void BM_figures(benchmark::State& state) {
  run(state, [](const Study& s) {
    const StudyFigures figures = measure(s.lesions, s.lungs.labels);
    const RgbImage plot = infection_rate_plot(figures);
    write_png_rgb((s.scratch / "plot.png").string(), plot.rgb.data(), plot.width, plot.height);
    std::vector<RgbImage> tiles;
    for (int64_t z : most_affected_slices(figures, 6)) tiles.push_back(affected_tile(s.ct, s.lungs.labels, s.lesions, z));
    const RgbImage m = montage(tiles, 3);
    write_png_rgb((s.scratch / "montage.png").string(), m.rgb.data(), m.width, m.height);
  });
  state.counters["montage_MB"] = double(fs::file_size(study().scratch / "montage.png")) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  if (!fs::is_directory(series_path())) {
    std::printf("bench_pipeline: no RICORD series at %s (set COVIDRATE_DATA or COVIDRATE_PIPELINE_SERIES); nothing to measure\n",
                series_path().c_str());
    return 0;
  }
  // One iteration takes 0.1 to 2 s: a few give a stable figure.
  for (auto [name, fn] : {std::pair{"pipeline/read/ricord", &BM_read}, std::pair{"pipeline/domain/ricord", &BM_domain},
                          std::pair{"pipeline/lungs/ricord", &BM_lungs},
                          std::pair{"pipeline/network_input/ricord", &BM_network_input},
                          std::pair{"pipeline/put_back/ricord", &BM_put_back},
                          std::pair{"pipeline/write_mask/ricord", &BM_write_mask},
                          std::pair{"pipeline/write_prob/ricord", &BM_write_prob},
                          std::pair{"pipeline/figures/ricord", &BM_figures}})
    benchmark::RegisterBenchmark(name, fn)->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::error_code ec;
  fs::remove_all(scratch(), ec);
  return 0;
}
