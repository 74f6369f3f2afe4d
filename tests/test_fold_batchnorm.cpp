// BN folded into the preceding convolution (nn/fold_batchnorm.h) computes what
// the convolution followed by BN in evaluation mode computes. The whole
// network's folded evaluation forward is checked against PyTorch by
// test_model's golden test.
#include <doctest/doctest.h>

#include <random>

#include "nn/fold_batchnorm.h"
#include "tests/support/test_support.h"

using namespace covidrate;

namespace {

// A conv and the BN after it, every parameter and statistic drawn at random
// (running variances in [0.2, 2], gammas of both signs) so that no factor is 1.
struct ConvBn {
  ParameterStore store;
  Conv2d conv;
  BatchNorm2d bn;
  ConvBn(DType dtype, bool bias, int stride, int dilation)
      : store(dtype, 7),
        conv(store, "conv", 3, 6, 3, {.stride = stride, .dilation = dilation, .bias = bias}),
        bn(store, "bn", 6) {
    store.allocate(Device::CPU);
    std::mt19937 rng(11);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    std::map<std::string, Tensor> values;
    for (const auto& [name, t] : store.named_tensors()) {
      std::vector<double> v(static_cast<size_t>(t.numel()));
      for (double& x : v) x = name == "bn.running_var" ? 1.1 + 0.9 * u(rng) : u(rng);
      values[name] = Tensor::from_vector(t.shape(), v, dtype);
    }
    store.load(values, "random");
    bn.set_training(false);
  }
};

Tensor random_input(DType dtype) {
  std::mt19937 rng(5);
  std::normal_distribution<double> d(0.0, 1.0);
  std::vector<double> v(2 * 3 * 17 * 20);
  for (double& x : v) x = d(rng);
  return Tensor::from_vector(Shape{2, 3, 17, 20}, v, dtype);
}

}  // namespace

TEST_CASE("a conv with BN folded in equals the conv followed by BN in evaluation mode") {
  ag::NoGrad no_tape;
  for (const bool bias : {true, false}) {
    for (const auto& [stride, dilation] : {std::pair{1, 1}, std::pair{2, 1}, std::pair{1, 2}}) {
      CAPTURE(bias);
      CAPTURE(stride);
      CAPTURE(dilation);
      // float64: the two orders of the same arithmetic agree to rounding.
      ConvBn f64(DType::F64, bias, stride, dilation);
      const ag::Var x64(random_input(DType::F64));
      const Tensor unfolded64 = f64.bn.forward(f64.conv.forward(x64)).value();
      const Tensor folded64 = conv_bn_eval(f64.conv, f64.bn, x64).value();
      REQUIRE(folded64.shape() == unfolded64.shape());
      CHECK(test::closeness(folded64, unfolded64, 1e-12, 1e-12) <= 1.0);
      // float32, as deployed: rounding of the folded kernel and of BN's pass.
      ConvBn f32(DType::F32, bias, stride, dilation);
      const ag::Var x32(random_input(DType::F32));
      const Tensor unfolded32 = f32.bn.forward(f32.conv.forward(x32)).value();
      const Tensor folded32 = conv_bn_eval(f32.conv, f32.bn, x32).value();
      CHECK(test::closeness(folded32, unfolded32, 1e-5, 1e-5) <= 1.0);
      // The folded kernel is a new tensor: the parameters are left alone.
      const FoldedConv folded = fold_batchnorm(f32.conv, f32.bn);
      CHECK_FALSE(folded.weight.same_storage(f32.conv.weight().value()));
    }
  }
}

TEST_CASE("folding follows the running statistics as they change") {
  ag::NoGrad no_tape;
  ConvBn net(DType::F64, true, 1, 1);
  const ag::Var x(random_input(DType::F64));
  const Tensor before = conv_bn_eval(net.conv, net.bn, x).value();
  auto values = net.store.named_tensors();  // new statistics, as a load or a training step brings
  values["bn.running_var"] = Tensor::full(Shape{6}, 4.0, DType::F64);
  net.store.load(values, "new statistics");
  const Tensor unfolded = net.bn.forward(net.conv.forward(x)).value();
  const Tensor folded = conv_bn_eval(net.conv, net.bn, x).value();
  CHECK(test::closeness(folded, unfolded, 1e-12, 1e-12) <= 1.0);
  CHECK(test::closeness(before, unfolded, 1e-3, 1e-3) > 1.0);
}

TEST_CASE("folding a BN of another channel count is an error naming both layers") {
  ParameterStore store;
  Conv2d conv(store, "enc.conv", 3, 6, 3);
  BatchNorm2d bn(store, "enc.bn", 4);
  store.allocate(Device::CPU);
  try {
    fold_batchnorm(conv, bn);
    FAIL("no error");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("fold_batchnorm") != std::string::npos);
    CHECK(msg.find("'enc.conv' has 6 output channels") != std::string::npos);
    CHECK(msg.find("'enc.bn' 4") != std::string::npos);
  }
}
