// CPU convolution throughput at the shapes of COVID-Rate's heaviest layers for
// a 256x256 slice, batch 1, 3x3 kernels, float32: forward, backward data and
// backward filter, each reported as GFLOP/s (2*N*Cout*Ho*Wo*Cin*K*K per pass)
// of wall time, and as GFLOP per second of CPU time of the whole process (all
// threads), which tells the work done apart from the load of a shared machine.
// The flop count is the same nominal one for every algorithm (and for PyTorch):
// where Winograd does fewer multiplications, the rate is an effective one.
//
//   COVIDRATE_THREADS=2 build/bench_conv
//
// Benchmark names are conv/<shape>/<pass>; bench/torch_conv.py prints the same
// keys for PyTorch, and bench/compare_conv_cpu.sh puts the two side by side.
// winograd/<shape>/forward/m2|m4 (which Winograd tile wins where) and
// phases/<shape>/forward/winograd|im2col (the decoders' phase convolutions both
// ways) compare our own algorithms: no peer. Every case sets its own minimum
// time of 0.3 s, which --benchmark_min_time does not override.
#include <benchmark/benchmark.h>

#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/cpu/threads.h"
#include "kernels/ops.h"

using namespace covidrate;

namespace {

struct Layer {
  int64_t cin, size, cout;
  int dilation;
  // "128x256x256->64 d1": input channels x height x width -> output channels, dilation.
  std::string key() const {
    return std::to_string(cin) + "x" + std::to_string(size) + "x" + std::to_string(size) + "->" +
           std::to_string(cout) + " d" + std::to_string(dilation);
  }
};

// Keep in sync with LAYERS in bench/torch_conv.py.
const std::vector<Layer> kLayers = {
    {128, 256, 64, 1},   // decoder, full resolution
    {256, 128, 128, 1},  // decoder, 1/2 resolution
    {1024, 32, 512, 1},  // bottleneck side, 1/8 resolution
    {256, 128, 128, 2},  // the dilated variant at 1/2 resolution
};

// The 3x3 stride-1 layers of the full-width network on a 512x512 slice (the
// forward's shapes; backward data runs the same tiles), for the Winograd tile
// comparison: each forced to F(2x2, 3x3) and to F(4x4, 3x3).
const std::vector<Layer> kWinogradLayers = {
    {128, 512, 64, 2},  // decoder 4, after the concatenation (2 x 64 channels)
    {128, 512, 64, 1},  // decoder 4, after the upsampling
    {32, 256, 32, 2},   // encoder 1
    {64, 128, 64, 2},   // encoder 2
    {128, 64, 128, 2},  // encoder 3
    {1024, 64, 512, 2}, // decoder 1, after the concatenation (2 x 512 channels)
    {256, 32, 256, 1},  // encoder 4
    {256, 32, 256, 8},  // context perception boosting, widest dilation
};

// The four-phase up-convolutions of the inference form at 512x512 (2x2 kernels,
// pad 1, four times the up-conv's output channels; model/inference_form.h):
// dec4 .. dec1, input channels x coarse map -> 4 x output channels.
const std::vector<Layer> kPhaseLayers = {
    {128, 256, 256, 1},   // decoder 4
    {256, 128, 512, 1},   // decoder 3
    {512, 64, 1024, 1},   // decoder 2
    {256, 32, 2048, 1},   // decoder 1 (after context perception boosting)
};

double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

enum class Pass { Forward, BackwardData, BackwardFilter };

Tensor random(const Shape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(s.numel()));
  for (float& x : v) x = d(rng);
  return Tensor::from_vector(s, v);
}

// tile: 0 = chosen per layer (what the program runs), 2 or 4 = forced.
// phase: the 2x2 phase convolution (pad 1) instead of a 3x3 "same" one; with
// `inference` it runs Winograd F(4x4, 2x2), without it the im2col GEMM.
void run(benchmark::State& state, Layer layer, Pass pass, int tile, bool phase, bool inference) {
  cpu::set_winograd_tile(tile);
  const int k = phase ? 2 : 3;
  ConvParams p = phase ? ConvParams{1, 1, 1} : ConvParams::same(k, 1, layer.dilation);
  p.inference = inference;
  const Tensor x = random({1, layer.cin, layer.size, layer.size}, 1);
  const Tensor w = random({layer.cout, layer.cin, k, k}, 2);
  const Shape ys = conv2d_out_shape(x.shape(), w.shape(), p);
  const Tensor dy = random(ys, 3);
  Tensor y = Tensor::empty(ys), dx = Tensor::empty(x.shape()), dw = Tensor::zeros(w.shape());
  const double cpu_start = process_cpu_seconds();
  for (auto _ : state) {
    switch (pass) {
      case Pass::Forward: ops::conv2d_forward(x, w, nullptr, p, y); break;
      case Pass::BackwardData: ops::conv2d_backward_data(dy, w, p, dx, false); break;
      case Pass::BackwardFilter: ops::conv2d_backward_filter(dy, x, p, dw, nullptr); break;
    }
  }
  const double cpu_seconds = process_cpu_seconds() - cpu_start;
  const double gflop = 2e-9 * static_cast<double>(ys.numel()) * layer.cin * k * k *
                       static_cast<double>(state.iterations());
  state.counters["GFLOP/s"] = benchmark::Counter(gflop, benchmark::Counter::kIsRate);
  state.counters["GFLOP/cpu-s"] = gflop / cpu_seconds;
  state.counters["threads"] = cpu::num_threads();
  cpu::set_winograd_tile(0);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  const std::pair<Pass, const char*> passes[] = {
      {Pass::Forward, "forward"}, {Pass::BackwardData, "backward_data"},
      {Pass::BackwardFilter, "backward_filter"}};
  for (const Layer& layer : kLayers) {
    for (const auto& [pass, name] : passes) {
      benchmark::RegisterBenchmark(("conv/" + layer.key() + "/" + name).c_str(), run, layer, pass, 0, false, false)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()  // the work runs on several threads: CPU time of the caller means little
          ->MinTime(0.3);
    }
  }
  // winograd/<shape>/forward/m2|m4: which tile wins where (cpu::winograd_tile's choice).
  for (const Layer& layer : kWinogradLayers) {
    for (int tile : {2, 4}) {
      benchmark::RegisterBenchmark(
          ("winograd/" + layer.key() + "/forward/m" + std::to_string(tile)).c_str(), run, layer,
          Pass::Forward, tile, false, false)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->MinTime(0.3);
    }
  }
  // phases/<shape>/forward/winograd|im2col: the phase convolutions both ways.
  for (const Layer& layer : kPhaseLayers) {
    for (const bool winograd : {true, false}) {
      benchmark::RegisterBenchmark(
          ("phases/" + layer.key() + "/forward/" + (winograd ? "winograd" : "im2col")).c_str(), run, layer,
          Pass::Forward, 0, true, winograd)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->MinTime(0.3);
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
