// CPU throughput of the non-convolution ops at the activation sizes of
// COVID-Rate on a 256x256 slice (batch 1, 64 channels at full resolution),
// float32. These ops are memory-bound, so each reports the bytes it must move
// (inputs read once, outputs written once) per second of wall time (real
// time, since BN spreads channels over COVIDRATE_THREADS threads).
//
//   COVIDRATE_THREADS=2 build/bench_cpu_ops
#include <benchmark/benchmark.h>

#include "kernels/ops.h"

using namespace covidrate;

namespace {

constexpr int64_t kN = 1, kC = 64, kH = 256, kW = 256;
const Shape kAct{kN, kC, kH, kW};
const Shape kChan{kC};

Tensor filled(const Shape& s, double v) { return Tensor::full(s, v, DType::F32); }

void set_bytes(benchmark::State& state, int64_t tensors_moved) {
  state.SetBytesProcessed(state.iterations() * tensors_moved * kAct.numel() * 4);
}

void BM_batchnorm_train_forward(benchmark::State& state) {
  Tensor x = filled(kAct, 0.5), y = filled(kAct, 0), g = filled(kChan, 1), b = filled(kChan, 0);
  Tensor rm = filled(kChan, 0), rv = filled(kChan, 1), sm = filled(kChan, 0), si = filled(kChan, 0);
  for (auto _ : state) ops::batchnorm_forward_train(x, g, b, {}, rm, rv, y, sm, si);
  set_bytes(state, 2);
}

void BM_batchnorm_backward(benchmark::State& state) {
  Tensor x = filled(kAct, 0.5), dy = filled(kAct, 1), dx = filled(kAct, 0), g = filled(kChan, 1);
  Tensor sm = filled(kChan, 0.5), si = filled(kChan, 1), dg = filled(kChan, 0),
         db = filled(kChan, 0);
  for (auto _ : state) ops::batchnorm_backward(dy, x, g, sm, si, dx, dg, db, false);
  set_bytes(state, 3);
}

void BM_relu_forward(benchmark::State& state) {
  Tensor x = filled(kAct, -0.5), y = filled(kAct, 0);
  for (auto _ : state) ops::relu_forward(x, y);
  set_bytes(state, 2);
}

void BM_maxpool_forward(benchmark::State& state) {
  Tensor x = filled(kAct, 1), y = filled({kN, kC, kH / 2, kW / 2}, 0);
  for (auto _ : state) ops::maxpool2x2_forward(x, y);
  state.SetBytesProcessed(state.iterations() * kAct.numel() * 4 * 5 / 4);
}

void BM_upsample_forward(benchmark::State& state) {
  Tensor x = filled({kN, kC, kH / 2, kW / 2}, 1), y = filled(kAct, 0);
  for (auto _ : state) ops::upsample2x_forward(x, y);
  state.SetBytesProcessed(state.iterations() * kAct.numel() * 4 * 5 / 4);
}

void BM_concat_forward(benchmark::State& state) {
  const Shape half{kN, kC / 2, kH, kW};
  std::vector<Tensor> parts{filled(half, 1), filled(half, 2)};
  Tensor y = filled(kAct, 0);
  for (auto _ : state) ops::concat_channels_forward(parts, y);
  set_bytes(state, 2);
}

void BM_se_forward_backward(benchmark::State& state) {
  Tensor x = filled(kAct, 0.5), y = filled(kAct, 0), dy = filled(kAct, 1), dx = filled(kAct, 0);
  Tensor w1 = filled({kC / 8, kC}, 0.1), w2 = filled({kC, kC / 8}, 0.1);
  Tensor dw1 = filled(w1.shape(), 0), dw2 = filled(w2.shape(), 0);
  SeSaved saved{filled({kN, kC}, 0), filled({kN, kC / 8}, 0), filled({kN, kC}, 0)};
  for (auto _ : state) {
    ops::se_forward(x, w1, w2, y, saved);
    ops::se_backward(dy, x, w1, w2, saved, dx, dw1, dw2, false);
  }
  set_bytes(state, 6);  // forward reads x twice and writes y; backward reads dy, x and writes dx
}

void BM_hybrid_loss_forward_backward(benchmark::State& state) {
  const Shape mask{kN, 1, kH, kW};
  Tensor p = filled(mask, 0.3), y = filled(mask, 1), dp = filled(mask, 0);
  for (auto _ : state) {
    const LossSums s = ops::hybrid_loss_forward(p, y, {});
    ops::hybrid_loss_backward(p, y, {}, s, 1.0, dp, false);
  }
  state.SetBytesProcessed(state.iterations() * mask.numel() * 4 * 5);
}

}  // namespace

BENCHMARK(BM_batchnorm_train_forward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_batchnorm_backward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_relu_forward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_maxpool_forward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_upsample_forward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_concat_forward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_se_forward_backward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_hybrid_loss_forward_backward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
