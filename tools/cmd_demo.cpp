// covidrate demo: the engine end to end in a few seconds, with no data files.
//
// A tiny U-shaped network (conv, batchnorm, max-pooling, squeeze-excitation,
// upsampling, concatenation: the pieces of COVID-Rate) learns to segment
// bright blobs in seeded synthetic 64x64 noisy images, with the hybrid loss
// and Adam. It then saves the weights as safetensors, loads them into a fresh
// network and checks that it predicts exactly the same thing.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <string>

#include "nn/adam.h"
#include "nn/layers.h"
#include "tools/cli.h"

namespace covidrate::tools {

namespace {

constexpr int kSize = 64;
constexpr int kBatch = 8;

struct DemoNet {
  ParameterStore store;
  Conv2d conv1{store, "enc.conv", 1, 8, 3};
  BatchNorm2d bn1{store, "enc.bn", 8};
  Conv2d conv2{store, "mid.conv", 8, 16, 3};
  BatchNorm2d bn2{store, "mid.bn", 16};
  SqueezeExcite se{store, "mid.se", 16, 4};
  Conv2d conv3{store, "dec.conv", 24, 8, 3};
  BatchNorm2d bn3{store, "dec.bn", 8};
  Conv2d head{store, "head", 8, 1, 1};

  DemoNet(uint64_t seed, Device device) : store(DType::F32, seed) { store.allocate(device); }

  void set_training(bool training) {
    for (BatchNorm2d* bn : {&bn1, &bn2, &bn3}) bn->set_training(training);
  }

  // [N, 1, 64, 64] image -> [N, 1, 64, 64] probability of "blob".
  ag::Var forward(const ag::Var& x) const {
    ag::Var fine = ag::relu(bn1.forward(conv1.forward(x)));
    ag::Var coarse = ag::relu(bn2.forward(conv2.forward(ag::maxpool2x2(fine))));
    coarse = se.forward(coarse);
    ag::Var joined = ag::concat({ag::upsample2x(coarse), fine});
    ag::Var features = ag::relu(bn3.forward(conv3.forward(joined)));
    return ag::sigmoid(head.forward(features));
  }
};

// A batch of noisy images with one to three bright discs each, and their masks.
void make_batch(std::mt19937_64& rng, int n, Device device, Tensor& images, Tensor& masks) {
  std::vector<float> img(static_cast<size_t>(n) * kSize * kSize), mask(img.size(), 0.0f);
  std::normal_distribution<float> noise(0.0f, 0.6f);
  std::uniform_real_distribution<float> centre(8.0f, kSize - 8.0f), radius(3.0f, 9.0f);
  std::uniform_int_distribution<int> count(1, 3);
  for (int b = 0; b < n; ++b) {
    float* im = img.data() + static_cast<size_t>(b) * kSize * kSize;
    float* mk = mask.data() + static_cast<size_t>(b) * kSize * kSize;
    for (int k = count(rng); k > 0; --k) {
      const float cy = centre(rng), cx = centre(rng), r = radius(rng);
      for (int y = 0; y < kSize; ++y)
        for (int x = 0; x < kSize; ++x)
          if ((y - cy) * (y - cy) + (x - cx) * (x - cx) <= r * r) mk[y * kSize + x] = 1.0f;
    }
    for (int i = 0; i < kSize * kSize; ++i) im[i] = mk[i] + noise(rng);
  }
  const Shape shape{n, 1, kSize, kSize};
  images = Tensor::from_vector(shape, img).to(device);
  masks = Tensor::from_vector(shape, mask).to(device);
}

// Dice of the prediction thresholded at 0.5.
double dice(const Tensor& prob, const Tensor& mask) {
  const std::vector<float> p = prob.to_vector(), m = mask.to_vector();
  double both = 0, sum = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double predicted = p[i] > 0.5f ? 1.0 : 0.0;
    both += predicted * m[i];
    sum += predicted + m[i];
  }
  return sum > 0 ? 2.0 * both / sum : 1.0;
}

Tensor predict(DemoNet& net, const Tensor& images) {
  ag::NoGrad no_grad;
  net.set_training(false);
  Tensor out = net.forward(ag::Var(images)).value();
  net.set_training(true);
  return out;
}

void usage(FILE* out) {
  std::fprintf(out,
               "usage: covidrate demo [--device cpu|cuda] [--steps N] [--log-every K] [--out DIR]\n\n"
               "Trains a tiny segmentation network on synthetic images of bright blobs,\n"
               "saves its weights to DIR/demo.safetensors (default DIR: ./demo-out; a rerun\n"
               "replaces that one file), reloads them and checks the reloaded network\n"
               "predicts the same. Exits non-zero if the loss stops being finite or the\n"
               "reloaded prediction differs.\n");
}

}  // namespace

int cmd_demo(int argc, char** argv) {
  std::optional<Device> chosen;  // --device, else $COVIDRATE_DEVICE (read after the line, so --help always works)
  int steps = 120, log_every = 20;
  std::string out_dir = "demo-out";
  ArgScanner args(argc, argv);
  while (args.next()) {
    if (args.help()) {
      usage(stdout);
      return 0;
    } else if (args.is("--device")) {
      chosen = parse_device_option("--device", args.value());
    } else if (args.is("--steps")) {
      steps = static_cast<int>(args.integer(1, 1000000));
    } else if (args.is("--log-every")) {
      log_every = static_cast<int>(args.integer(1, 1000000));
    } else if (args.is("--out")) {
      out_dir = args.folder_value();
    } else {
      args.unknown();
    }
  }
  const Device device = chosen ? *chosen : default_device();
  // Checked before the training, not after it. The folder may exist (a rerun
  // replaces its demo.safetensors): the demo's output is its own, not a result.
  check_output_folder("demo", "--out", out_dir);
  CR_CHECK(!std::filesystem::exists(out_dir) || std::filesystem::is_directory(out_dir),
           "demo: cannot write --out " << out_dir << ": it is a file, not a folder");

  DemoNet net(/*seed=*/1, device);
  Adam adam(net.store, AdamParams{.lr = 1e-2});
  std::mt19937_64 rng(2022);
  Tensor val_images, val_masks;
  make_batch(rng, kBatch, device, val_images, val_masks);
  std::printf("covidrate demo: %lld parameters on %s, batches of %d synthetic %dx%d images\n",
              static_cast<long long>(net.store.parameter_count()), to_string(device), kBatch, kSize, kSize);

  auto last = std::chrono::steady_clock::now();
  for (int step = 1; step <= steps; ++step) {
    Tensor images, masks;
    make_batch(rng, kBatch, device, images, masks);
    adam.zero_grad();
    ag::Tape tape;
    LossSums sums;
    ag::Var loss = ag::hybrid_loss(net.forward(ag::Var(images)), masks, HybridLossParams{}, &sums);
    tape.backward(loss);
    adam.step();
    if (!std::isfinite(sums.loss)) {
      std::fprintf(stderr, "covidrate demo: the loss is %f at step %d\n", sums.loss, step);
      return 1;
    }
    if (step % log_every == 0 || step == steps) {
      const auto now = std::chrono::steady_clock::now();
      const double seconds = std::chrono::duration<double>(now - last).count();
      const int done = step % log_every == 0 ? log_every : step % log_every;
      const double val_dice = dice(predict(net, val_images), val_masks);
      std::printf("step %5d  loss %.4f  val dice %.3f  %.1f steps/s\n", step, sums.loss, val_dice,
                  done / seconds);
      std::fflush(stdout);
      last = std::chrono::steady_clock::now();  // validation is not training time
    }
  }

  std::filesystem::create_directories(out_dir);
  const std::string path = (std::filesystem::path(out_dir) / "demo.safetensors").string();
  const Tensor expected = predict(net, val_images);
  net.store.save(path, {{"description", "covidrate demo network"}, {"steps", std::to_string(steps)}});

  DemoNet reloaded(/*seed=*/99, device);  // different initial weights, all overwritten by the load
  reloaded.store.load(path);
  const Tensor actual = predict(reloaded, val_images);
  const std::vector<float> a = actual.to_vector(), e = expected.to_vector();
  if (std::memcmp(a.data(), e.data(), a.size() * sizeof(float)) != 0) {
    std::fprintf(stderr, "covidrate demo: the network reloaded from %s predicts differently\n", path.c_str());
    return 1;
  }
  std::printf("saved %s; the reloaded network predicts identically (val dice %.3f)\n", path.c_str(),
              dice(actual, val_masks));
  return 0;
}

}  // namespace covidrate::tools
