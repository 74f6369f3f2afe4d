// Google Benchmark of the custom CUDA kernels at COVID-Rate's shapes, plus the
// cuDNN convolutions behind ops::conv2d_* at three of its layers.
//
// Every run of an op is timed with CUDA events on the context stream (the GPU
// time of the op, not the launch cost); a benchmark reports the median run.
// Memory-bound kernels report the bandwidth they achieve on the bytes that
// must move (each input read once, each output written once: extra passes a
// kernel makes are NOT counted, so they show up as a lower fraction) and that
// bandwidth as a fraction of the device's peak (from the memory clock and bus
// width) and of a measured device-to-device copy. Convolutions report TFLOP/s.
//
//   build-gpu/bench_cuda_kernels [--benchmark_filter=bn] [--benchmark_format=json]
//
// The names match bench/torch_kernels_gpu.py, which times the same shapes in
// PyTorch and prints the ratios. Without a GPU it says so and exits 0.
#include <benchmark/benchmark.h>

#include <cstdio>

#include "nn/device.h"

#if COVIDRATE_HAVE_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "kernels/cuda/conv_direct.h"
#include "kernels/cuda/cuda_common.h"
#include "kernels/ops.h"

namespace {

using namespace covidrate;

// ---------------------------------------------------------------- timing
class GpuTimer {
 public:
  GpuTimer() {
    CUDA_CHECK(cudaEventCreate(&start_));
    CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~GpuTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  GpuTimer(const GpuTimer&) = delete;
  GpuTimer& operator=(const GpuTimer&) = delete;

  double seconds(const std::function<void()>& op) {
    const cudaStream_t s = cuda::context().stream;
    CUDA_CHECK(cudaEventRecord(start_, s));
    op();
    CUDA_CHECK(cudaEventRecord(stop_, s));
    CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return ms * 1e-3;
  }

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// Peak DRAM bandwidth: memory clock (kHz) x 2 (double data rate) x bus width (bytes).
double peak_bytes_per_s() {
  int device = cuda::context().device, clock_khz = 0, bus_bits = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device));
  CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device));
  return 2.0 * clock_khz * 1e3 * bus_bits / 8.0;
}

// What a large device-to-device copy achieves (bytes read + bytes written per second):
// the practical ceiling for a streaming kernel.
double copy_bytes_per_s() {
  static const double measured = [] {
    const int64_t n = int64_t{1} << 28;  // 1 GiB of floats
    Tensor a = Tensor::zeros(Shape{n}, DType::F32, Device::CUDA);
    Tensor b = Tensor::empty(Shape{n}, DType::F32, Device::CUDA);
    GpuTimer timer;
    std::vector<double> runs;
    for (int i = 0; i < 10; ++i)
      runs.push_back(timer.seconds([&] { ops::add_into(a, b, false); }));
    std::sort(runs.begin(), runs.end());
    return 2.0 * static_cast<double>(a.nbytes()) / runs[runs.size() / 2];
  }();
  return measured;
}

// Runs op once untimed (allocator warm-up, cuDNN algorithm choice), then once per
// iteration, and reports the median GPU time through the counters.
// bytes > 0: memory-bound counters; flops > 0: TFLOP/s.
void time_op(benchmark::State& state, double bytes, double flops, const std::function<void()>& op) {
  GpuTimer timer;
  op();
  CUDA_CHECK(cudaStreamSynchronize(cuda::context().stream));
  std::vector<double> runs;
  for (auto _ : state) {
    const double s = timer.seconds(op);
    state.SetIterationTime(s);
    runs.push_back(s);
  }
  std::sort(runs.begin(), runs.end());
  const double median = runs[runs.size() / 2];
  state.counters["median_us"] = median * 1e6;
  if (bytes > 0) {
    state.counters["GB/s"] = bytes / median / 1e9;
    state.counters["of_peak"] = bytes / median / peak_bytes_per_s();
    state.counters["of_copy"] = bytes / median / copy_bytes_per_s();
  }
  if (flops > 0) state.counters["TFLOP/s"] = flops / median / 1e12;
}

// ---------------------------------------------------------------- data
// Inputs are made once per (shape, range, seed) and kept: Google Benchmark
// calls each benchmark several times while it sizes the iteration count, and
// making 30 M random values on the host every time would dominate the run.
// Uniform values in [lo, hi) from a fixed-seed LCG; binary: 1 with probability 0.1.
const Tensor& input(const Shape& shape, float lo, float hi, uint32_t seed, bool binary = false) {
  // Never destroyed: no CUDA call may run during static destruction at exit.
  static auto& made = *new std::map<std::string, Tensor>;
  const std::string key = shape.str() + " " + std::to_string(lo) + " " + std::to_string(hi) + " " +
                          std::to_string(seed) + (binary ? " binary" : "");
  auto it = made.find(key);
  if (it != made.end()) return it->second;
  std::vector<float> host(static_cast<size_t>(shape.numel()));
  uint32_t state = seed * 2654435761u + 1u;
  for (float& v : host) {
    state = state * 1664525u + 1013904223u;
    const float u = static_cast<float>(state >> 8) * (1.0f / 16777216.0f);
    v = binary ? (u < 0.1f ? 1.f : 0.f) : lo + (hi - lo) * u;  // ~10% lesion pixels
  }
  return made.emplace(key, Tensor::from_vector(shape, host).to(Device::CUDA)).first->second;
}
Tensor random_cuda(const Shape& shape, float lo, float hi, uint32_t seed) {
  return input(shape, lo, hi, seed);
}
// For buffers an op writes into: a private copy, so cached inputs stay as made.
Tensor random_copy(const Shape& shape, float lo, float hi, uint32_t seed) {
  return input(shape, lo, hi, seed).clone();
}
Tensor binary_cuda(const Shape& shape, uint32_t seed) { return input(shape, 0, 1, seed, true); }
Tensor empty_cuda(const Shape& shape) { return Tensor::empty(shape, DType::F32, Device::CUDA); }

constexpr double kF = sizeof(float);
// Activations of COVID-Rate's first level: batch 4, 32 channels, 512 x 512.
const Shape kAct{4, 32, 512, 512};
const double kActN = static_cast<double>(kAct.numel());

// ---------------------------------------------------------------- benchmarks
void register_memory_benchmarks() {
  using benchmark::State;
  auto reg = [](const std::string& name, std::function<void(State&)> fn) {
    benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMicrosecond);
  };
  const std::string act = "/4x32x512x512";

  reg("fill" + act, [](State& st) {
    Tensor y = empty_cuda(kAct);
    time_op(st, kActN * kF, 0, [&] { ops::fill(y, 0.5); });
  });
  reg("add_into_acc" + act, [](State& st) {
    Tensor x = random_cuda(kAct, -1, 1, 1), y = random_copy(kAct, -1, 1, 2);
    time_op(st, 3 * kActN * kF, 0, [&] { ops::add_into(x, y, true); });
  });
  reg("axpy" + act, [](State& st) {
    Tensor x = random_cuda(kAct, -1, 1, 1), y = random_copy(kAct, -1, 1, 2);
    time_op(st, 3 * kActN * kF, 0, [&] { ops::axpy(1e-4, x, y); });
  });
  reg("relu_fwd" + act, [](State& st) {
    Tensor x = random_cuda(kAct, -1, 1, 1), y = empty_cuda(kAct);
    time_op(st, 2 * kActN * kF, 0, [&] { ops::relu_forward(x, y); });
  });
  reg("relu_bwd" + act, [](State& st) {
    Tensor dy = random_cuda(kAct, -1, 1, 1), y = random_cuda(kAct, -1, 1, 2), dx = empty_cuda(kAct);
    time_op(st, 3 * kActN * kF, 0, [&] { ops::relu_backward(dy, y, dx, false); });
  });
  reg("sigmoid_fwd" + act, [](State& st) {
    Tensor x = random_cuda(kAct, -4, 4, 1), y = empty_cuda(kAct);
    time_op(st, 2 * kActN * kF, 0, [&] { ops::sigmoid_forward(x, y); });
  });
  reg("sigmoid_bwd" + act, [](State& st) {
    Tensor dy = random_cuda(kAct, -1, 1, 1), y = random_cuda(kAct, 0, 1, 2), dx = empty_cuda(kAct);
    time_op(st, 3 * kActN * kF, 0, [&] { ops::sigmoid_backward(dy, y, dx, false); });
  });
  reg("add_fwd" + act, [](State& st) {
    Tensor a = random_cuda(kAct, -1, 1, 1), b = random_cuda(kAct, -1, 1, 2), y = empty_cuda(kAct);
    time_op(st, 3 * kActN * kF, 0, [&] { ops::add_forward(a, b, y); });
  });
  reg("mul_channel_fwd" + act, [](State& st) {
    Tensor x = random_cuda(kAct, -1, 1, 1), s = random_cuda(Shape{4, 32}, 0, 1, 2), y = empty_cuda(kAct);
    time_op(st, 2 * kActN * kF, 0, [&] { ops::mul_channel_forward(x, s, y); });
  });
  reg("mul_channel_bwd" + act, [](State& st) {
    Tensor dy = random_cuda(kAct, -1, 1, 1), x = random_cuda(kAct, -1, 1, 2);
    Tensor s = random_cuda(Shape{4, 32}, 0, 1, 3), dx = empty_cuda(kAct), ds = empty_cuda(Shape{4, 32});
    time_op(st, 3 * kActN * kF, 0, [&] { ops::mul_channel_backward(dy, x, s, dx, ds, false); });
  });
  reg("mul_pixel_fwd" + act, [](State& st) {
    Tensor x = random_cuda(kAct, -1, 1, 1), a = random_cuda(Shape{kAct[0], 1, kAct[2], kAct[3]}, 0, 1, 2);
    Tensor y = empty_cuda(kAct);
    time_op(st, 2 * kActN * kF, 0, [&] { ops::mul_pixel_forward(x, a, y); });
  });
  reg("mul_pixel_bwd" + act, [](State& st) {
    const Shape gate{kAct[0], 1, kAct[2], kAct[3]};
    Tensor dy = random_cuda(kAct, -1, 1, 1), x = random_cuda(kAct, -1, 1, 2);
    Tensor a = random_cuda(gate, 0, 1, 3), dx = empty_cuda(kAct), da = empty_cuda(gate);
    time_op(st, 3 * kActN * kF, 0, [&] { ops::mul_pixel_backward(dy, x, a, dx, da, false); });
  });
  reg("concat_fwd/2x(4x32x512x512)", [](State& st) {
    std::vector<Tensor> xs{random_cuda(kAct, -1, 1, 1), random_cuda(kAct, -1, 1, 2)};
    Tensor y = empty_cuda(Shape{4, 64, 512, 512});
    time_op(st, 4 * kActN * kF, 0, [&] { ops::concat_channels_forward(xs, y); });
  });
  reg("concat_bwd/2x(4x32x512x512)", [](State& st) {
    Tensor dy = random_cuda(Shape{4, 64, 512, 512}, -1, 1, 1);
    std::vector<Tensor> dxs{empty_cuda(kAct), empty_cuda(kAct)};
    time_op(st, 4 * kActN * kF, 0, [&] { ops::concat_channels_backward(dy, dxs, false); });
  });
  reg("upsample2x_fwd/4x32x256x256", [](State& st) {
    Tensor x = random_cuda(Shape{4, 32, 256, 256}, -1, 1, 1), y = empty_cuda(kAct);
    time_op(st, 1.25 * kActN * kF, 0, [&] { ops::upsample2x_forward(x, y); });
  });
  reg("upsample2x_bwd/4x32x256x256", [](State& st) {
    Tensor dy = random_cuda(kAct, -1, 1, 1), dx = empty_cuda(Shape{4, 32, 256, 256});
    time_op(st, 1.25 * kActN * kF, 0, [&] { ops::upsample2x_backward(dy, dx, false); });
  });
  // The inference form's four phases of an upsampled conv back on the fine
  // grid, bias and ReLU fused: reads [4, 128, 257, 257], writes kAct.
  reg("interleave_phases_fwd" + act, [](State& st) {
    Tensor z = random_cuda(Shape{4, 128, 257, 257}, -1, 1, 1), b = random_cuda(Shape{32}, -0.1, 0.1, 2);
    Tensor y = empty_cuda(kAct);
    time_op(st, 2 * kActN * kF, 0, [&] { ops::interleave_phases_forward(z, &b, true, y); });
  });
  reg("maxpool2x2_fwd" + act, [](State& st) {
    Tensor x = random_cuda(kAct, -1, 1, 1), y = empty_cuda(Shape{4, 32, 256, 256});
    time_op(st, 1.25 * kActN * kF, 0, [&] { ops::maxpool2x2_forward(x, y); });
  });
  reg("maxpool2x2_bwd" + act, [](State& st) {
    Tensor x = random_cuda(kAct, -1, 1, 1), dy = random_cuda(Shape{4, 32, 256, 256}, -1, 1, 2);
    Tensor dx = empty_cuda(kAct);
    time_op(st, 2.25 * kActN * kF, 0, [&] { ops::maxpool2x2_backward(dy, x, dx, false); });
  });
  reg("global_avg_pool_fwd" + act, [](State& st) {
    Tensor x = random_cuda(kAct, -1, 1, 1), y = empty_cuda(Shape{4, 32});
    time_op(st, kActN * kF, 0, [&] { ops::global_avg_pool_forward(x, y); });
  });
  reg("global_avg_pool_bwd" + act, [](State& st) {
    Tensor dy = random_cuda(Shape{4, 32}, -1, 1, 1), dx = empty_cuda(kAct);
    time_op(st, kActN * kF, 0, [&] { ops::global_avg_pool_backward(dy, dx, false); });
  });

  // Batch norm: the stats pass is a second read of x that the byte count does not include.
  reg("bn_train_fwd" + act, [](State& st) {
    Tensor x = random_cuda(kAct, -1, 3, 1), y = empty_cuda(kAct);
    Tensor gamma = random_cuda(Shape{32}, 0.5, 1.5, 2), beta = random_cuda(Shape{32}, -1, 1, 3);
    Tensor rm = Tensor::zeros(Shape{32}, DType::F32, Device::CUDA);
    Tensor rv = Tensor::full(Shape{32}, 1.0, DType::F32, Device::CUDA);
    Tensor sm = empty_cuda(Shape{32}), si = empty_cuda(Shape{32});
    time_op(st, 2 * kActN * kF, 0,
            [&] { ops::batchnorm_forward_train(x, gamma, beta, {}, rm, rv, y, sm, si); });
  });
  reg("bn_infer_fwd" + act, [](State& st) {
    Tensor x = random_cuda(kAct, -1, 3, 1), y = empty_cuda(kAct);
    Tensor gamma = random_cuda(Shape{32}, 0.5, 1.5, 2), beta = random_cuda(Shape{32}, -1, 1, 3);
    Tensor rm = Tensor::zeros(Shape{32}, DType::F32, Device::CUDA);
    Tensor rv = Tensor::full(Shape{32}, 1.0, DType::F32, Device::CUDA);
    time_op(st, 2 * kActN * kF, 0, [&] { ops::batchnorm_forward_infer(x, gamma, beta, rm, rv, {}, y); });
  });
  reg("bn_bwd" + act, [](State& st) {
    Tensor x = random_cuda(kAct, -1, 3, 1), dy = random_cuda(kAct, -1, 1, 2), dx = empty_cuda(kAct);
    Tensor gamma = random_cuda(Shape{32}, 0.5, 1.5, 3);
    Tensor sm = random_cuda(Shape{32}, 0.9, 1.1, 4), si = random_cuda(Shape{32}, 0.5, 0.6, 5);
    Tensor dg = Tensor::zeros(Shape{32}, DType::F32, Device::CUDA), db = Tensor::zeros(Shape{32}, DType::F32, Device::CUDA);
    time_op(st, 3 * kActN * kF, 0,
            [&] { ops::batchnorm_backward(dy, x, gamma, sm, si, dx, dg, db, false); });
  });

  // Squeeze-and-excitation with reduction 16 (32 -> 2 -> 32).
  reg("se_fwd" + act, [](State& st) {
    Tensor x = random_cuda(kAct, -1, 1, 1), y = empty_cuda(kAct);
    Tensor w1 = random_cuda(Shape{2, 32}, -0.3, 0.3, 2), w2 = random_cuda(Shape{32, 2}, -0.3, 0.3, 3);
    SeSaved saved{empty_cuda(Shape{4, 32}), empty_cuda(Shape{4, 2}), empty_cuda(Shape{4, 32})};
    time_op(st, 2 * kActN * kF, 0, [&] { ops::se_forward(x, w1, w2, y, saved); });
  });
  reg("se_bwd" + act, [](State& st) {
    Tensor x = random_cuda(kAct, -1, 1, 1), dy = random_cuda(kAct, -1, 1, 2), y = empty_cuda(kAct);
    Tensor dx = empty_cuda(kAct);
    Tensor w1 = random_cuda(Shape{2, 32}, -0.3, 0.3, 3), w2 = random_cuda(Shape{32, 2}, -0.3, 0.3, 4);
    Tensor dw1 = Tensor::zeros(Shape{2, 32}, DType::F32, Device::CUDA);
    Tensor dw2 = Tensor::zeros(Shape{32, 2}, DType::F32, Device::CUDA);
    SeSaved saved{empty_cuda(Shape{4, 32}), empty_cuda(Shape{4, 2}), empty_cuda(Shape{4, 32})};
    ops::se_forward(x, w1, w2, y, saved);
    time_op(st, 3 * kActN * kF, 0,
            [&] { ops::se_backward(dy, x, w1, w2, saved, dx, dw1, dw2, false); });
  });

  // The loss on the network's output: batch 8 of 512 x 512 probabilities.
  // The forward includes the copy of the four sums to the host.
  const Shape out{8, 1, 512, 512};
  const double out_n = static_cast<double>(out.numel());
  reg("hybrid_loss_fwd/8x1x512x512", [out, out_n](State& st) {
    Tensor p = random_cuda(out, 0, 1, 1), y = binary_cuda(out, 2);
    time_op(st, 2 * out_n * kF, 0, [&] { benchmark::DoNotOptimize(ops::hybrid_loss_forward(p, y, {})); });
  });
  reg("hybrid_loss_bwd/8x1x512x512", [out, out_n](State& st) {
    Tensor p = random_cuda(out, 0, 1, 1), y = binary_cuda(out, 2), dp = empty_cuda(out);
    const LossSums sums = ops::hybrid_loss_forward(p, y, {});
    time_op(st, 3 * out_n * kF, 0, [&] { ops::hybrid_loss_backward(p, y, {}, sums, 1.0, dp, false); });
  });

  // The certainty index of a batch of 16 predictions (segment's batch on a GPU):
  // one read of the probabilities, 16 floats written.
  const Shape batch16{16, 1, 512, 512};
  reg("certainty_index/16x1x512x512", [batch16](State& st) {
    Tensor p = random_cuda(batch16, 0, 1, 1), ci = empty_cuda(Shape{16});
    time_op(st, static_cast<double>(batch16.numel()) * kF, 0, [&] { ops::certainty_index(p, 0.3, ci); });
  });

  // Adam over all of COVID-Rate's parameters at once (about 14.4 M).
  reg("adam/14.4M", [](State& st) {
    const Shape n{14'400'000};
    Tensor w = random_copy(n, -0.1, 0.1, 1), g = random_cuda(n, -1e-3, 1e-3, 2);
    Tensor m = Tensor::zeros(n, DType::F32, Device::CUDA), v = Tensor::zeros(n, DType::F32, Device::CUDA);
    int64_t step = 0;
    time_op(st, 7 * static_cast<double>(n.numel()) * kF, 0,
            [&] { ops::adam_step(w, g, m, v, {}, ++step); });
  });
}

// 3x3 "same" convolutions of three COVID-Rate layers, batch 4.
struct ConvShape {
  int64_t cin, cout, hw;
};
void register_conv_benchmarks() {
  using benchmark::State;
  for (const ConvShape c : {ConvShape{128, 64, 256}, ConvShape{256, 128, 128}, ConvShape{1024, 512, 32}}) {
    // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) on "/" + std::to_string(...).
    std::string tag = "/";
    tag += std::to_string(c.cin);
    tag += "to";
    tag += std::to_string(c.cout);
    tag += "@";
    tag += std::to_string(c.hw);
    const Shape xs{4, c.cin, c.hw, c.hw}, ws{c.cout, c.cin, 3, 3}, ys{4, c.cout, c.hw, c.hw};
    const double flops = 2.0 * 4 * c.cout * c.hw * c.hw * c.cin * 9;
    const ConvParams p = ConvParams::same(3);
    auto reg = [](const std::string& name, std::function<void(State&)> fn) {
      benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMicrosecond);
    };
    reg("conv_fwd" + tag, [=](State& st) {
      Tensor x = random_cuda(xs, -1, 1, 1), w = random_cuda(ws, -0.05, 0.05, 2);
      Tensor b = random_cuda(Shape{c.cout}, -0.1, 0.1, 3), y = empty_cuda(ys);
      time_op(st, 0, flops, [&] { ops::conv2d_forward(x, w, &b, p, y); });
    });
    reg("conv_bwd_data" + tag, [=](State& st) {
      Tensor dy = random_cuda(ys, -1, 1, 1), w = random_cuda(ws, -0.05, 0.05, 2), dx = empty_cuda(xs);
      time_op(st, 0, flops, [&] { ops::conv2d_backward_data(dy, w, p, dx, false); });
    });
    reg("conv_bwd_filter" + tag, [=](State& st) {
      Tensor dy = random_cuda(ys, -1, 1, 1), x = random_cuda(xs, -1, 1, 2);
      Tensor dw = Tensor::zeros(ws, DType::F32, Device::CUDA), db = Tensor::zeros(Shape{c.cout}, DType::F32, Device::CUDA);
      time_op(st, 0, flops, [&] { ops::conv2d_backward_filter(dy, x, p, dw, &db); });
    });
  }
}

// COVID-Rate's tiny filter banks in bf16 at full resolution, batch 16 (segment's
// batch on a GPU), in our direct kernel and in cuDNN: the A/B behind
// kernels/cuda/conv_direct.h. Bytes: the input read once, the output written
// once (what the direct kernel moves; cuDNN plus its bias pass moves more).
void register_direct_conv_benchmarks() {
  using benchmark::State;
  struct Bank {
    const char* name;
    int64_t cin, cout;
    int kernel, stride;
    bool relu;
  };
  const Bank banks[] = {{"stem_7x7_1to32", 1, 32, 7, 1, true},
                        {"shortcut_1x1s2_32to32", 32, 32, 1, 2, false},
                        {"transition_1x1_32to64", 32, 64, 1, 1, true},
                        {"head_1x1_64to1", 64, 1, 1, 1, false}};
  for (const Bank& bank : banks) {
    for (const bool direct : {true, false}) {
      const std::string name = std::string("conv_bf16_") + (direct ? "direct/" : "cudnn/") + bank.name + "@16x512";
      benchmark::RegisterBenchmark(name.c_str(), [bank, direct](State& st) {
        ConvParams p = ConvParams::same(bank.kernel, bank.stride);
        p.relu = bank.relu;
        const Shape xs{16, bank.cin, 512, 512}, ws{bank.cout, bank.cin, bank.kernel, bank.kernel};
        const Shape ys = conv2d_out_shape(xs, ws, p);
        const auto bf16 = [](const Tensor& t) {
          Tensor out = Tensor::empty(t.shape(), DType::BF16, Device::CUDA);
          ops::cast(t, out);
          return out;
        };
        const Tensor x = bf16(random_cuda(xs, -1, 1, 1)), w = bf16(random_cuda(ws, -0.2, 0.2, 2));
        const Tensor b = bf16(random_cuda(Shape{bank.cout}, -0.1, 0.1, 3));
        Tensor y = Tensor::empty(ys, DType::BF16, Device::CUDA);
        cuda::set_direct_conv(direct);
        const double bytes = 2.0 * static_cast<double>(xs.numel() + ys.numel());
        const double flops = 2.0 * static_cast<double>(ys.numel()) * bank.cin * bank.kernel * bank.kernel;
        time_op(st, bytes, flops, [&] { ops::conv2d_forward(x, w, &b, p, y); });
        cuda::set_direct_conv(std::nullopt);
      })->UseManualTime()->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (!covidrate::cuda_available()) {
    std::printf("bench_cuda_kernels: nothing to run, %s\n", covidrate::cuda_unavailable_reason().c_str());
    return 0;
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, covidrate::cuda::context().device));
  std::printf("device: %s, %d SMs, peak DRAM %.0f GB/s (clock x bus width), measured D2D copy %.0f GB/s, TF32 %s\n",
              prop.name, prop.multiProcessorCount, peak_bytes_per_s() / 1e9, copy_bytes_per_s() / 1e9,
              covidrate::cuda::context().allow_tf32 ? "on" : "off");
  register_memory_benchmarks();
  register_conv_benchmarks();
  register_direct_conv_benchmarks();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

#else  // no CUDA backend in this build

int main() {
  std::printf("bench_cuda_kernels: nothing to run, %s\n", covidrate::cuda_unavailable_reason().c_str());
  return 0;
}

#endif
