// The whole COVID-Rate network on the CPU, batch 1, float32:
//   train  one training step: forward (batch statistics), hybrid loss,
//          backward, Adam step, at 352 x 352;
//   infer  evaluation mode without a tape (running statistics), at 512 x 512
//          (the size segment runs at) and 352 x 352;
// each at width 0.25 (the CPU training width) and 1 (the paper's network); and
//   infer-prepared  the inference form in f32 (CovidRateNet::prepare_inference:
//          BN folded once, not at every call), what `covidrate segment` runs,
//          at width 1, 512 x 512 (no PyTorch peer: compare it with infer/w1/512);
//   infer-prepared-upsampled  the same with the decoders' upsampling and
//          up-conv as two steps (SegmentationNet::UpsampleConv::Upsampled)
//          instead of one four-phase convolution: the A/B behind that choice;
//   infer-prepared-concat  the same with each decoder's two paths concatenated
//          as copies instead of written into the concatenation in place
//          (model::set_decoder_concat_in_place): the A/B behind that one;
//   the paper's baselines (model/segmentation_net.h): U-Net, Attention U-Net and
//          U-Net++, a training step at width 0.25, 352 x 352, and the inference
//          form at width 1, 512 x 512 (keys <pass>/<architecture>/w<width>/<size>;
//          ours only).
// bench/bench_cuda_network.cpp has the GPU cases, bf16 included.
//
//   COVIDRATE_THREADS=2 build/bench_network [--benchmark_min_time=0.1]
//
// Counters:
//   images/s      batch images per second of wall time;
//   GFLOP/s       CovidRateNet::forward_flops per image per second; a training
//                 step counts 3x the forward (forward, backward data, backward
//                 filter), the usual convention;
//   cpu_ms/image  process CPU time (all threads) per image: the work done,
//                 nearly independent of other load on a shared machine;
//   alloc_MB      peak bytes held by cpu_allocator() over the steps: every
//                 tensor, the weights, gradients and Adam's moments included;
//   reserved_MB   bytes cpu_allocator() holds from the system at the end,
//                 its cache of freed blocks included (the caching allocator
//                 never shrinks on its own: this is its peak);
//   rss_MB        growth of the process's peak resident set over the steps
//                 (VmHWM, reset through /proc/self/clear_refs, minus the
//                 resident set before them): what the operating system sees,
//                 malloc's retained free blocks included, and the measure
//                 bench/torch_network.py takes for PyTorch. Meaningful for
//                 the first case of a process only (malloc keeps what earlier
//                 cases freed): run one case per process with
//                 --benchmark_filter, as bench/compare_network_cpu.sh does.
// Each run first does one untimed step (and the measures of memory cover it:
// our Adam allocates its state when made, PyTorch's at its first step). Only
// the training cases have an optimizer, on both sides. Steps take up to
// seconds, so a run takes one or a few iterations: set --benchmark_min_time
// to trade time for precision.
//
// Names are network/<pass>/w<width>/<size>; bench/torch_network.py prints the
// same keys and bench/compare_network_cpu.sh puts the two side by side.
#include <benchmark/benchmark.h>

#include <ctime>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/process_stats.h"
#include "kernels/cpu/threads.h"
#include "kernels/op_profile.h"
#include "model/segmentation_net.h"
#include "nn/adam.h"
#include "nn/allocator.h"
#include "nn/autograd.h"

using namespace covidrate;

namespace {

enum class Pass { Train, Infer, InferPrepared };

struct Case {
  Pass pass;
  double width;
  int64_t size;
  Architecture architecture = Architecture::CovidRate;
  SegmentationNet::UpsampleConv upsample = SegmentationNet::UpsampleConv::Phases;  // InferPrepared only
  bool concat_in_place = true;                                                       // InferPrepared only
  std::string key() const {
    std::ostringstream s;
    s << (pass == Pass::Train ? "train" : pass == Pass::Infer ? "infer" : "infer-prepared");
    if (upsample == SegmentationNet::UpsampleConv::Upsampled) s << "-upsampled";
    if (!concat_in_place) s << "-concat";
    if (architecture != Architecture::CovidRate) s << "/" << to_string(architecture);
    s << "/w" << width << "/" << size;
    return s.str();
  }
};

// Keep in sync with CASES in bench/torch_network.py.
const std::vector<Case> kCases = {
    {Pass::Train, 0.25, 352}, {Pass::Train, 1.0, 352},  {Pass::Infer, 0.25, 512},
    {Pass::Infer, 1.0, 512},  {Pass::Infer, 0.25, 352}, {Pass::Infer, 1.0, 352},
    {Pass::InferPrepared, 1.0, 512},  // ours only
    {Pass::InferPrepared, 1.0, 512, Architecture::CovidRate, SegmentationNet::UpsampleConv::Upsampled},
    {Pass::InferPrepared, 1.0, 512, Architecture::CovidRate, SegmentationNet::UpsampleConv::Phases, false},
    // The baselines, ours only.
    {Pass::Train, 0.25, 352, Architecture::UNet}, {Pass::Train, 0.25, 352, Architecture::AttentionUNet},
    {Pass::Train, 0.25, 352, Architecture::UNetPlusPlus}, {Pass::InferPrepared, 1.0, 512, Architecture::UNet},
    {Pass::InferPrepared, 1.0, 512, Architecture::AttentionUNet},
    {Pass::InferPrepared, 1.0, 512, Architecture::UNetPlusPlus},
};

using bench::proc_status_bytes;
using bench::process_cpu_seconds;
using bench::reset_peak_rss;

// A CT-like image in [0, 1] and a disk as the lesion mask.
void make_batch(int64_t size, Tensor& image, Tensor& mask) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> pixels(static_cast<size_t>(size * size)), lesion(pixels.size());
  for (int64_t y = 0; y < size; ++y) {
    for (int64_t x = 0; x < size; ++x) {
      const int64_t dy = y - size / 2, dx = x - size / 3;
      pixels[static_cast<size_t>(y * size + x)] = u(rng);
      lesion[static_cast<size_t>(y * size + x)] = dy * dy + dx * dx < size * size / 25 ? 1.f : 0.f;
    }
  }
  image = Tensor::from_vector({1, 1, size, size}, pixels);
  mask = Tensor::from_vector({1, 1, size, size}, lesion);
}

void run(benchmark::State& state, Case c) {
  NetConfig config;
  config.width = c.width;
  config.architecture = c.architecture;
  const std::unique_ptr<SegmentationNet> network = make_network(config);
  SegmentationNet& net = *network;
  Tensor image, mask;
  make_batch(c.size, image, mask);
  // Only a training step has an optimizer: its gradients and moments are the
  // parameters' training state, which an inference network never holds.
  std::optional<Adam> adam;
  if (c.pass == Pass::Train) adam.emplace(net.parameters(), AdamParams{});
  net.set_training(c.pass == Pass::Train);
  if (c.pass == Pass::InferPrepared) net.prepare_inference(DType::F32, c.upsample);
  model::set_decoder_concat_in_place(c.concat_in_place);

  const auto step = [&] {
    if (c.pass != Pass::Train) {
      ag::NoGrad no_grad;
      benchmark::DoNotOptimize(net.forward(ag::Var(image)).value().raw());
      return;
    }
    adam->zero_grad();
    {
      ag::Tape tape;
      tape.backward(ag::hybrid_loss(net.forward(ag::Var(image)), mask, HybridLossParams{}));
    }
    adam->step();
  };

  const double rss_before = proc_status_bytes("VmRSS");
  reset_peak_rss();
  cpu_allocator().reset_peak();
  step();  // warm-up: first-touch of the buffers, lazily built tables
  profile::reset();  // COVIDRATE_PROFILE: the op table covers the timed steps only
  const double cpu_start = process_cpu_seconds();
  for (auto _ : state) step();
  const double cpu_seconds = process_cpu_seconds() - cpu_start;

  const double flops_per_image =
      net.forward_flops(c.size, c.size) * (c.pass == Pass::Train ? 3.0 : 1.0);
  const auto images = static_cast<double>(state.iterations());
  state.counters["images/s"] = benchmark::Counter(images, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(1e-9 * flops_per_image * images, benchmark::Counter::kIsRate);
  state.counters["cpu_ms/image"] = 1e3 * cpu_seconds / images;
  state.counters["alloc_MB"] = 1e-6 * static_cast<double>(cpu_allocator().stats().peak);
  state.counters["reserved_MB"] = 1e-6 * static_cast<double>(cpu_allocator().stats().reserved);
  state.counters["rss_MB"] = 1e-6 * (proc_status_bytes("VmHWM") - rss_before);
  state.counters["threads"] = cpu::num_threads();
}

}  // namespace

int main(int argc, char** argv) {
  // A short default (one timed step for all but the smallest cases) that a
  // --benchmark_min_time on the command line overrides: the last flag wins.
  // (A MinTime set on a benchmark would override the command line instead.)
  std::vector<char*> args(argv, argv + argc);
  std::string short_default = "--benchmark_min_time=0.1";
  args.insert(args.begin() + 1, short_default.data());
  int count = static_cast<int>(args.size());
  benchmark::Initialize(&count, args.data());
  for (const Case& c : kCases) {
    benchmark::RegisterBenchmark(("network/" + c.key()).c_str(), run, c)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();  // the work runs on several threads: the caller's CPU time means little
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // The last case's timed steps (filter one case for a clean table).
  if (profile::enabled()) std::fputs(profile::report().c_str(), stderr);
  return 0;
}
