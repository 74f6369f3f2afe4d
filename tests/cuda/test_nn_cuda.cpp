// The nn layer on the GPU: the same network, seeds and batch on the CPU and on
// CUDA give the same loss, gradients, Adam steps and running statistics; the
// ParameterStore moves between devices and saves from the GPU; the U-Net
// baselines (max pooling, attention gates) train and infer alike on both.
// Skipped without a GPU.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <unistd.h>

#include "model/segmentation_net.h"
#include "nn/adam.h"
#include "nn/layers.h"
#include "nn/safetensors.h"
#include "tests/cuda/require_gpu.h"
#include "tests/support/test_support.h"

using namespace covidrate;

namespace {

// Every tape op in one small network.
struct Net {
  ParameterStore store{DType::F32, 21};
  Conv2d conv1{store, "conv1", 2, 16, 3};
  BatchNorm2d bn{store, "bn", 16};
  SqueezeExcite se{store, "se", 16, 4};
  Conv2d conv2{store, "conv2", 32, 8, 3, {.dilation = 2}};
  Linear fc{store, "fc", 8, 8};
  Conv2d head{store, "head", 8, 1, 1};

  explicit Net(Device device) { store.allocate(device); }

  ag::Var forward(const ag::Var& x) const {
    ag::Var h = ag::relu(bn.forward(conv1.forward(x)));
    ag::Var r = ag::add(se.forward(h), h);
    ag::Var u = ag::concat({ag::upsample2x(ag::maxpool2x2(r)), h});
    ag::Var f = ag::relu(conv2.forward(u));
    f = ag::mul_channel(f, ag::sigmoid(fc.forward(ag::global_avg_pool(f))));
    return ag::sigmoid(head.forward(f));
  }
};

struct Batch {
  Tensor x = test::randn(Shape{4, 2, 16, 16}, 5);
  Tensor y = test::bernoulli(Shape{4, 1, 16, 16}, 6, 0.3);
};

// Runs n training steps; returns the last loss.
double train(Net& net, const Batch& batch, int steps, Adam& adam) {
  const Device device = net.store.device();
  const Tensor x = batch.x.to(device), y = batch.y.to(device);
  double loss = 0;
  for (int i = 0; i < steps; ++i) {
    adam.zero_grad();
    ag::Tape tape;
    LossSums sums;
    ag::Var l = ag::hybrid_loss(net.forward(ag::Var(x)), y, HybridLossParams{.pos_weight = 2.0}, &sums);
    tape.backward(l);
    loss = sums.loss;
    if (i + 1 < steps) adam.step();
  }
  return loss;
}

}  // namespace

TEST_CASE("one network on the CPU and on CUDA: loss, gradients, Adam, running statistics") {
  Net cpu(Device::CPU), gpu(Device::CUDA);
  CHECK(gpu.store.flat_values().is_cuda());
  CHECK(gpu.store.parameter("conv1.weight").value().is_cuda());
  Adam adam_cpu(cpu.store, AdamParams{.lr = 1e-3, .decay = 0.01});
  Adam adam_gpu(gpu.store, AdamParams{.lr = 1e-3, .decay = 0.01});
  const Batch batch;
  // Three steps: forward, backward, two Adam updates, third forward and backward.
  const double loss_cpu = train(cpu, batch, 3, adam_cpu);
  const double loss_gpu = train(gpu, batch, 3, adam_gpu);
  CHECK(loss_gpu == doctest::Approx(loss_cpu).epsilon(1e-4));
  CHECK(test::count_nonfinite(gpu.store.flat_grads()) == 0);
  CHECK(test::rel_l2(gpu.store.flat_grads(), cpu.store.flat_grads()) < 1e-3);
  CHECK(test::closeness(gpu.store.flat_values(), cpu.store.flat_values(), 1e-4, 1e-5) <= 1.0);
  for (size_t i = 0; i < cpu.store.buffers().size(); ++i)
    CHECK(test::closeness(gpu.store.buffers()[i].value, cpu.store.buffers()[i].value, 1e-4, 1e-5) <= 1.0);
}

TEST_CASE("an Attention U-Net on the CPU and on CUDA: a training step, then f32 and bf16 inference") {
  NetConfig config;
  config.architecture = Architecture::AttentionUNet;
  config.width = 0.125;
  config.seed = 4;
  const std::unique_ptr<SegmentationNet> cpu = make_network(config), gpu = make_network(config);
  gpu->parameters().to(Device::CUDA);
  const Tensor x = test::randn(Shape{2, 1, 64, 64}, 8), y = test::bernoulli(Shape{2, 1, 64, 64}, 9, 0.2);
  double losses[2];
  for (int d = 0; d < 2; ++d) {
    SegmentationNet& net = d == 0 ? *cpu : *gpu;
    const Device device = d == 0 ? Device::CPU : Device::CUDA;
    net.parameters().zero_grad();
    ag::Tape tape;
    LossSums sums;
    tape.backward(ag::hybrid_loss(net.forward(ag::Var(x.to(device))), y.to(device), HybridLossParams{}, &sums));
    losses[d] = sums.loss;
  }
  CHECK(losses[1] == doctest::Approx(losses[0]).epsilon(1e-4));
  CHECK(test::count_nonfinite(gpu->parameters().flat_grads()) == 0);
  CHECK(test::rel_l2(gpu->parameters().flat_grads(), cpu->parameters().flat_grads()) < 1e-3);

  cpu->set_training(false);
  gpu->set_training(false);
  const Tensor cpu_eval = cpu->forward(ag::Var(x)).value();
  CHECK(test::closeness(gpu->forward(ag::Var(x.to(Device::CUDA))).value().to(Device::CPU), cpu_eval, 1e-4, 1e-5) <= 1);
  cpu->prepare_inference(DType::BF16);
  gpu->prepare_inference(DType::BF16);
  const Tensor cpu_bf16 = cpu->forward(ag::Var(x)).value();
  const Tensor gpu_bf16 = gpu->forward(ag::Var(x.to(Device::CUDA))).value().to(Device::CPU);
  CHECK(test::count_nonfinite(gpu_bf16) == 0);
  // Both round every op's output to bf16; summation order differs (see test_inference_cuda).
  CHECK(test::closeness(gpu_bf16, cpu_bf16, 0, 0.03) <= 1);
}

TEST_CASE("the store moves between devices and saves from the GPU") {
  Net net(Device::CPU);
  // A store has gradient buffers only once it has training state (nn/parameters.h);
  // without it grad() below throws. With it, the gradients move too.
  net.store.ensure_training_state();
  const std::vector<float> before = net.store.flat_values().to_vector();
  net.store.to(Device::CUDA);
  CHECK(net.store.parameter("bn.weight").value().is_cuda());
  CHECK(net.store.parameter("bn.weight").grad().is_cuda());
  CHECK(net.store.buffers()[0].value.is_cuda());
  // The network runs where its parameters now are.
  {
    ag::NoGrad no_grad;
    net.bn.set_training(false);
    CHECK(net.forward(ag::Var(Batch{}.x.to(Device::CUDA))).value().is_cuda());
  }
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("covidrate_nn_cuda_" + std::to_string(::getpid()) + ".safetensors"))
                               .string();
  net.store.save(path);
  Net loaded(Device::CPU);
  loaded.store.load(path);
  std::filesystem::remove(path);
  CHECK(loaded.store.flat_values().to_vector() == before);
  net.store.to(Device::CPU);
  CHECK(net.store.flat_values().to_vector() == before);
  CHECK_FALSE(net.store.parameter("conv1.weight").value().is_cuda());
}
