// The whole COVID-Rate network (width 1) on the GPU, at the sizes it trains and
// segments at:
//   train  one training step: forward (batch statistics), hybrid loss, backward,
//          Adam, at 352 x 352, batch 4;
//   infer  evaluation mode without a tape, at 512 x 512, batch 16 (the batch
//          of `covidrate segment --device cuda --batch 16`);
// each in float32 with TF32 off (exact float32 arithmetic) and on (TF32 tensor
// cores in cuDNN and cuBLAS; COVIDRATE_TF32=1 in the programs); and inference
// in the inference form (CovidRateNet::prepare_inference: BN folded once,
// weights cast), as `covidrate segment` runs it: f32-prepared, and bf16 (bf16
// storage, f32 arithmetic; the peer of PyTorch's eager bf16); and bf16 once
// more with the decoders' upsampling and up-conv as two steps
// (bf16-upsampled: SegmentationNet::UpsampleConv::Upsampled), to measure what
// their four-phase form (model/inference_form.h) gains on this GPU.
//
//   build-gpu/bench_cuda_network [--benchmark_format=json]
//
// A step is timed from its first launch to a device synchronize: wall time,
// launches and the host's work included, as a user sees it. Counters:
//   images/s   batch images per second;
//   GFLOP/s    CovidRateNet::forward_flops per image per second (x3 for training);
//   peak_MB    peak bytes held by the CUDA caching allocator over the steps.
// Names are network/<pass>/w1/<size>/b<batch>/<precision>; bench/torch_network_gpu.py
// times the same cases in PyTorch (fp32, tf32, and its AMP) and prints the ratios.
// Without a GPU it says so and exits 0.
#include <benchmark/benchmark.h>

#include <cstdio>

#include "nn/device.h"

#if COVIDRATE_HAVE_CUDA
#include <cuda_runtime.h>

#include <optional>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_common.h"
#include "kernels/op_profile.h"
#include "model/covidrate_net.h"
#include "nn/adam.h"
#include "nn/allocator.h"
#include "nn/autograd.h"

namespace {

using namespace covidrate;

enum class Pass { Train, Infer };

struct Case {
  Pass pass;
  int64_t size, batch;
  bool tf32;
  std::optional<DType> prepared = std::nullopt;  // inference only: the inference form in this dtype
  SegmentationNet::UpsampleConv upsample = SegmentationNet::UpsampleConv::Phases;  // with prepared
  std::string name() const {
    std::string precision = !prepared                  ? (tf32 ? "/tf32" : "/f32")
                            : *prepared == DType::BF16 ? "/bf16"
                                                       : "/f32-prepared";
    if (upsample == SegmentationNet::UpsampleConv::Upsampled) precision += "-upsampled";
    return std::string("network/") + (pass == Pass::Train ? "train" : "infer") + "/w1/" + std::to_string(size) +
           "/b" + std::to_string(batch) + precision;
  }
};

// Keep in sync with CASES in bench/torch_network_gpu.py.
const std::vector<Case> kCases = {
    {Pass::Train, 352, 4, false}, {Pass::Train, 352, 4, true},
    {Pass::Infer, 512, 16, false}, {Pass::Infer, 512, 16, true},
    {Pass::Infer, 512, 16, false, DType::F32}, {Pass::Infer, 512, 16, false, DType::BF16},
    {Pass::Infer, 512, 16, false, DType::BF16, SegmentationNet::UpsampleConv::Upsampled},
};

// A CT-like batch in [0, 1] and a disk as the lesion mask, on the GPU.
void make_batch(int64_t batch, int64_t size, Tensor& image, Tensor& mask) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  const auto count = static_cast<size_t>(batch * size * size);
  std::vector<float> pixels(count), lesion(count);
  for (size_t i = 0; i < count; ++i) {
    const int64_t y = static_cast<int64_t>(i) / size % size, x = static_cast<int64_t>(i) % size;
    const int64_t dy = y - size / 2, dx = x - size / 3;
    pixels[i] = u(rng);
    lesion[i] = dy * dy + dx * dx < size * size / 25 ? 1.f : 0.f;
  }
  image = Tensor::from_vector({batch, 1, size, size}, pixels).to(Device::CUDA);
  mask = Tensor::from_vector({batch, 1, size, size}, lesion).to(Device::CUDA);
}

void run(benchmark::State& state, Case c) {
  cuda::context().allow_tf32 = c.tf32;
  CovidRateNet net;  // width 1, with CPB
  net.parameters().to(Device::CUDA);
  Tensor image, mask;
  make_batch(c.batch, c.size, image, mask);
  // Only a training step has an optimizer: its gradients and moments are the
  // parameters' training state, which an inference network never holds.
  std::optional<Adam> adam;
  if (c.pass != Pass::Infer) adam.emplace(net.parameters(), AdamParams{});
  net.set_training(c.pass == Pass::Train);
  if (c.prepared) net.prepare_inference(*c.prepared, c.upsample);

  const auto step = [&] {
    if (c.pass == Pass::Infer) {
      ag::NoGrad no_grad;
      benchmark::DoNotOptimize(net.forward(ag::Var(image)).value().raw());
    } else {
      adam->zero_grad();
      {
        ag::Tape tape;
        tape.backward(ag::hybrid_loss(net.forward(ag::Var(image)), mask, HybridLossParams{}));
      }
      adam->step();
    }
    CUDA_CHECK(cudaDeviceSynchronize());
  };

  Allocator& device_memory = allocator_for(Device::CUDA);
  device_memory.reset_peak();
  step();  // warm-up: cuDNN's algorithm search per shape, the allocator's first blocks
  step();
  profile::reset();  // COVIDRATE_PROFILE: the op table covers the timed steps only
  for (auto _ : state) step();

  const double flops_per_image = net.forward_flops(c.size, c.size) * (c.pass == Pass::Train ? 3.0 : 1.0);
  const auto images = static_cast<double>(state.iterations() * c.batch);
  state.counters["images/s"] = benchmark::Counter(images, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(1e-9 * flops_per_image * images, benchmark::Counter::kIsRate);
  state.counters["peak_MB"] = 1e-6 * static_cast<double>(device_memory.stats().peak);
  cuda::context().allow_tf32 = false;
}

}  // namespace

int main(int argc, char** argv) {
  // Steps take tens of milliseconds: half a second gives each case several.
  std::vector<char*> args(argv, argv + argc);
  std::string short_default = "--benchmark_min_time=0.5";
  args.insert(args.begin() + 1, short_default.data());
  int count = static_cast<int>(args.size());
  benchmark::Initialize(&count, args.data());
  if (!covidrate::cuda_available()) {
    std::printf("bench_cuda_network: nothing to run, %s\n", covidrate::cuda_unavailable_reason().c_str());
    return 0;
  }
  for (const Case& c : kCases) {
    benchmark::RegisterBenchmark(c.name().c_str(), run, c)->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // The last case's timed steps (filter one case for a clean table).
  if (covidrate::profile::enabled()) std::fputs(covidrate::profile::report().c_str(), stderr);
  return 0;
}

#else  // no CUDA backend in this build

int main() {
  std::printf("bench_cuda_network: nothing to run, %s\n", covidrate::cuda_unavailable_reason().c_str());
  return 0;
}

#endif
