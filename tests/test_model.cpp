// The COVID-Rate network: parameter counts, shapes and errors, golden outputs
// and gradients from an independent PyTorch implementation
// (tools/dev/make_model_golden.py), and a finite-difference gradient check.
//
// The golden files hold no weights: both sides draw the weights, the inputs
// and the targets from the same counter-based generator (tests/support/
// model_golden.cpp, documented in the script), so a 57.5 MB full-width network travels as a
// formula and only its outputs are stored.
// gpu_check: CPU only (its CUDA side is a program in tests/cuda).
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "model/covidrate_net.h"
#include "tests/support/model_golden.h"
#include "tests/support/test_support.h"

using namespace covidrate;
using namespace covidrate::test;

namespace {

// ---------------------------------------------------------------- parameter count
// The count written out from the architecture (docs/model.md), independent of
// the modules: conv k x k from I to O has I*O*k*k + O, BN 2C, SE 2*C*max(1, C/16).
int64_t expected_param_count(double width, bool cpb) {
  auto ch = [&](int c) { return static_cast<int64_t>(scaled_channels(c, width)); };
  auto conv = [](int64_t i, int64_t o, int64_t k) { return i * o * k * k + o; };
  auto bn = [](int64_t c) { return 2 * c; };
  auto se = [](int64_t c) { return 2 * c * std::max<int64_t>(1, c / 16); };
  int64_t total = conv(1, ch(32), 7) + bn(ch(32));
  int64_t in = ch(32);
  std::vector<int64_t> skips;
  for (const int base : {32, 64, 128, 256}) {
    const int64_t f = ch(base);
    skips.push_back(in);
    total += conv(in, f, 3) + bn(f) + conv(f, f, 3) + bn(f) + se(f) + conv(in, f, 1) + bn(f);  // unit 1
    total += conv(f, f, 3) + bn(f) + conv(f, f, 3) + bn(f) + se(f);                          // unit 2
    in = f;
  }
  if (cpb) {
    total += conv(in, ch(256), 1) + 4 * conv(in, ch(256), 3) + bn(ch(256));
    in = ch(256);
  }
  int i = 0;
  for (const int base : {512, 256, 128, 64}) {
    const int64_t f = ch(base), skip = skips[3 - i++];
    total += conv(in, f, 3) + bn(f) + conv(skip, f, 1) + conv(2 * f, f, 3) + bn(f) + se(f);
    in = f;
  }
  return total + conv(in, 1, 1);
}

}  // namespace

namespace {
// Building the full-width network draws 14.4M initial weights: build it once.
const CovidRateNet& full_width_net() {
  static const CovidRateNet net;
  return net;
}
}  // namespace

TEST_CASE("model: parameter counts") {
  CHECK(expected_param_count(1.0, true) == 14'380'833);
  CHECK(full_width_net().param_count() == 14'380'833);
  CHECK(expected_param_count(1.0, false) == 11'954'209);
  for (const double width : {0.125, 0.25, 0.5}) {
    for (const bool cpb : {true, false}) {
      NetConfig config;
      config.width = width;
      config.cpb = cpb;
      INFO("width " << width << (cpb ? " with" : " without") << " CPB");
      CHECK(CovidRateNet(config).param_count() == expected_param_count(width, cpb));
    }
  }
  CHECK(expected_param_count(0.25, true) == 902'089);
}

TEST_CASE("model: channel rounding, names, L2 on the CPB kernels") {
  CHECK(scaled_channels(32, 1.0) == 32);
  CHECK(scaled_channels(32, 0.25) == 8);
  CHECK(scaled_channels(32, 0.125) == 8);  // never below 8
  CHECK(scaled_channels(64, 0.3) == 16);   // 19.2 -> 16
  CHECK(scaled_channels(256, 0.75) == 192);
  CHECK_THROWS_AS(scaled_channels(32, 0.0), Error);
  CHECK_THROWS_AS(scaled_channels(32, NAN), Error);
  CHECK_THROWS_AS(scaled_channels(32, 1e9), Error);

  NetConfig config;
  config.width = 0.25;
  const CovidRateNet net(config);
  const ParameterStore& store = net.parameters();
  for (const char* name : {"stem.conv.weight", "enc2.unit1.conv1.weight", "enc2.unit1.shortcut.bias",
                           "enc2.unit1.shortcut_bn.weight", "enc4.unit2.se.fc2.weight", "cpb.conv_d8.weight",
                           "dec1.up_conv.weight", "dec3.transition.weight", "dec4.se.fc1.weight",
                           "head.conv.bias"})
    CHECK_NOTHROW(store.parameter(name));
  int penalized = 0;
  for (const auto& p : store.parameters()) {
    if (p.l2 > 0) {
      ++penalized;
      CHECK(p.name.rfind("cpb.conv", 0) == 0);
      CHECK(p.name.ends_with(".weight"));
      CHECK(p.l2 == 0.01);
    }
  }
  CHECK(penalized == 5);
}

TEST_CASE("model: forward FLOPs and the stage table at 512 x 512") {
  const CovidRateNet& net = full_width_net();
  const double flops = net.forward_flops(512, 512);
  // 306.60 GFLOP of convolutions (2 x multiply-adds) plus the SE layers' few kFLOP.
  CHECK(flops == doctest::Approx(306.6036224e9).epsilon(1e-6));
  const auto rows = net.summary(512, 512);
  REQUIRE(rows.size() == 11);
  double flop_sum = 0;
  int64_t param_sum = 0;
  for (const auto& r : rows) flop_sum += r.flops, param_sum += r.parameters;
  CHECK(flop_sum == doctest::Approx(flops).epsilon(1e-12));
  CHECK(param_sum == net.param_count());
  CHECK(rows.back().name == "head");
  CHECK(rows.back().output == Shape{1, 512, 512});
  CHECK(rows[4].name == "enc4");
  CHECK(rows[4].output == Shape{256, 32, 32});
  CHECK_THROWS_AS(net.forward_flops(500, 512), Error);
}

TEST_CASE("model: bad input shapes are clear errors") {
  NetConfig config;
  config.width = 0.125;
  CovidRateNet net(config);
  auto message_of = [&](const Shape& shape) {
    try {
      net.forward(ag::Var(Tensor::zeros(shape)));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(message_of(Shape{1, 3, 32, 32}).find("one CT channel") != std::string::npos);
  CHECK(message_of(Shape{1, 1, 40, 32}).find("multiples of 16") != std::string::npos);
  CHECK(message_of(Shape{1, 32, 32}).find("[N, 1, H, W]") != std::string::npos);
  const ag::Var out = net.forward(ag::Var(Tensor::zeros(Shape{2, 1, 32, 48})));
  CHECK(out.value().shape() == Shape{2, 1, 32, 48});
}

// ---------------------------------------------------------------- golden: PyTorch 1.13
// The references, their tolerances and the checks: tests/support/model_golden.cpp.
TEST_CASE("model golden: full width, 512 x 512 evaluation and 2 x 64 x 64 training forward") {
  check_full_width_golden(Device::CPU);
}

TEST_CASE("model golden: width 0.25, 2 x 128 x 128, hybrid loss and every parameter gradient") {
  check_gradient_golden(Device::CPU);
}

// The same references on a GPU: tests/cuda/test_model_cuda.cpp (skipped without one).

// ---------------------------------------------------------------- finite differences
// Width 0.125 (8 to 64 channels), batch 2, 32 x 32, float64 on the CPU,
// training mode, through the hybrid loss. The step h = 1e-6 is small on
// purpose: the loss is only piecewise smooth (every ReLU), and a stem weight
// moves ~16k pre-activations per layer, so at h = 1e-5 some cross zero and
// the difference is off by up to 0.2% (measured), while at 1e-6 and 1e-7 it
// agrees with the tape to 1e-9. Rounding then costs ~eps * loss / h ~ 1e-9.
TEST_CASE("model: tape gradients match finite differences (width 0.125, f64)") {
  NetConfig config;
  config.width = 0.125;
  config.dtype = DType::F64;
  CovidRateNet net(config);
  load_golden_weights(net);  // non-trivial BN parameters and biases
  net.set_training(true);
  const Tensor image = golden_value("input.gradcheck", Shape{2, 1, 32, 32}, DType::F64);
  const Tensor target = target_disks(2, 32, DType::F64);

  ag::Var input(image, /*requires_grad=*/true);
  net.parameters().zero_grad();
  {
    ag::Tape tape;
    tape.backward(ag::hybrid_loss(net.forward(input), target, HybridLossParams{}));
  }
  auto loss_now = [&] {
    ag::NoGrad no_tape;
    const ag::Var loss = ag::hybrid_loss(net.forward(ag::Var(image)), target, HybridLossParams{});
    return loss.value().to_vector_f64()[0];
  };
  const auto numeric = [&](const Tensor& t, int64_t i) { return test::central_difference(t, i, 1e-6, loss_now); };
  auto check = [](const std::string& what, double tape, double fd) {
    INFO(what << ": tape " << tape << ", finite differences " << fd);
    CHECK(std::fabs(tape - fd) <= 1e-8 + 1e-5 * std::max(std::fabs(tape), std::fabs(fd)));
  };

  // A spread of layers: stem, both units and their shortcut, SE, CPB, the
  // decoder's transition and fuse conv, BN gamma/beta, the head.
  const std::vector<std::string> names = {
      "stem.conv.weight",         "stem.bn.weight",           "enc1.unit1.conv1.weight",
      "enc1.unit1.shortcut.weight", "enc2.unit2.conv2.weight", "enc2.unit1.se.fc1.weight",
      "enc3.unit1.shortcut_bn.bias", "enc4.unit2.se.fc2.weight", "cpb.conv1x1.weight",
      "cpb.conv_d8.weight",       "cpb.bn.bias",              "dec1.up_conv.weight",
      "dec2.transition.weight",   "dec2.transition.bias",     "dec3.conv.weight",
      "dec4.se.fc1.weight",       "dec4.bn.weight",           "head.conv.weight",
      "head.conv.bias"};
  for (const auto& name : names) {
    const ag::Var& p = net.parameters().parameter(name);
    const int64_t n = p.value().numel();
    for (const int64_t i : {int64_t{0}, n / 2 + 1, n - 1}) {
      const int64_t at = std::min(i, n - 1);
      check(name + "[" + std::to_string(at) + "]", p.grad().to_vector_f64()[static_cast<size_t>(at)],
            numeric(p.value(), at));
    }
  }
  for (const int64_t pixel : {int64_t{0}, int64_t{33}, int64_t{517}, int64_t{2047}})
    check("input[" + std::to_string(pixel) + "]", input.grad().to_vector_f64()[static_cast<size_t>(pixel)],
          numeric(image, pixel));
}
