// ParameterStore: parameters are views of the flat buffers, and loading
// rejects anything that does not match the model, naming what is wrong.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <unistd.h>

#include "nn/adam.h"
#include "nn/layers.h"
#include "nn/safetensors.h"
#include "tests/support/test_support.h"

using namespace covidrate;

namespace {

// conv (weight [4,2,3,3] + bias [4]) and BN (weight, bias [4]; running stats).
struct TinyNet {
  ParameterStore store{DType::F32, 3};
  Conv2d conv{store, "enc.conv", 2, 4, 3};
  BatchNorm2d bn{store, "enc.bn", 4};
  TinyNet() { store.allocate(Device::CPU); }
};

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("parameters are aligned views of the flat buffers") {
  TinyNet net;
  const auto& params = net.store.parameters();
  REQUIRE(params.size() == 4);
  CHECK(net.store.parameter_count() == 4 * 2 * 9 + 4 + 4 + 4);
  for (const auto& p : params) CHECK(p.offset % 64 == 0);

  const ag::Var& w = net.store.parameter("enc.conv.weight");
  CHECK(w.value().shape() == (Shape{4, 2, 3, 3}));
  CHECK(w.value().same_storage(net.store.flat_values()));
  net.store.ensure_training_state();
  CHECK(w.grad().same_storage(net.store.flat_grads()));

  // Writing through the flat buffer shows in the view, and the other way round.
  const auto& bias = params[1];
  CHECK(bias.name == "enc.conv.bias");
  net.store.flat_values().data<float>()[bias.offset + 2] = 5.0f;
  CHECK(bias.var.value().to_vector()[2] == 5.0f);
  Tensor gview = bias.var.grad();
  gview.fill_(1.5);
  CHECK(net.store.flat_grads().data<float>()[bias.offset] == 1.5f);
  net.store.zero_grad();
  CHECK(gview.to_vector()[0] == 0.0f);

  // Initial values were copied in: BN gamma 1, beta 0, running var 1.
  CHECK(net.store.parameter("enc.bn.weight").value().to_vector() == std::vector<float>(4, 1.0f));
  const auto& buffers = net.store.buffers();
  REQUIRE(buffers.size() == 2);
  CHECK(buffers[1].name == "enc.bn.running_var");
  CHECK(buffers[1].value.to_vector() == std::vector<float>(4, 1.0f));
}

TEST_CASE("the training state arrives with the first sign of training, not before") {
  // A network loaded to segment never trains: at full width its gradients and
  // Adam's moments would be 3 x 57.5 MB nobody reads.
  TinyNet net;
  CHECK_FALSE(net.store.has_training_state());
  CHECK(message_of([&] { net.store.flat_grads(); }).find("no training state") != std::string::npos);
  CHECK(message_of([&] { net.store.adam_m(); }).find("no training state") != std::string::npos);
  const ag::Var& w = net.store.parameter("enc.conv.weight");
  CHECK_FALSE(w.has_grad());
  CHECK(message_of([&] { (void)w.grad(); }).find("no gradient buffer") != std::string::npos);

  // A backward pass that reaches a parameter says what is missing instead of
  // giving it a gradient of its own, which no optimizer would see.
  const Tensor x = Tensor::full(Shape{1, 2, 5, 5}, 0.5, DType::F32, Device::CPU);
  const auto loss_of_conv = [&] {
    ag::Tape tape;
    const ag::Var p = ag::sigmoid(net.conv.forward(ag::Var(x)));
    const Tensor target = Tensor::zeros(p.value().shape(), DType::F32, Device::CPU);
    tape.backward(ag::hybrid_loss(p, target, {}));
  };
  CHECK(message_of(loss_of_conv).find("no gradient buffer") != std::string::npos);

  // Adam brings it: zero gradients and moments; the values stay, and so does
  // their version (an inference form built from them is not stale).
  const std::vector<float> values = net.store.flat_values().to_vector();
  const uint64_t version = net.store.values_version();
  Adam adam(net.store, AdamParams{});
  REQUIRE(net.store.has_training_state());
  CHECK(net.store.values_version() == version);
  CHECK(net.store.flat_values().to_vector() == values);
  for (Tensor* flat : {&net.store.flat_grads(), &net.store.adam_m(), &net.store.adam_v()}) {
    CHECK(flat->numel() == net.store.flat_values().numel());
    CHECK(flat->to_vector() == std::vector<float>(static_cast<size_t>(flat->numel()), 0.0f));
  }
  CHECK(w.grad().same_storage(net.store.flat_grads()));
  CHECK(message_of(loss_of_conv) == "(no error)");
  double written = 0;
  for (const float g : net.store.flat_grads().to_vector()) written += std::fabs(g);
  CHECK(written > 0);

  // zero_grad is the other sign; a second call changes nothing.
  TinyNet other;
  other.store.zero_grad();
  CHECK(other.store.has_training_state());
  const Tensor grads = other.store.flat_grads();
  other.store.ensure_training_state();
  CHECK(other.store.flat_grads().same_storage(grads));
}

TEST_CASE("glorot_uniform draws within its limit and depends on the seed") {
  TinyNet a, b;
  const double limit = std::sqrt(6.0 / (2 * 9 + 4 * 9));
  const auto wa = a.store.parameter("enc.conv.weight").value().to_vector();
  for (float v : wa) CHECK(std::abs(v) <= limit);
  CHECK(wa == b.store.parameter("enc.conv.weight").value().to_vector());
  ParameterStore other(DType::F32, 4);
  Conv2d conv(other, "enc.conv", 2, 4, 3);
  CHECK(other.parameter("enc.conv.weight").value().to_vector() != wa);
}

TEST_CASE("a store that does not draw initial values gets zeros from both initializers") {
  // load_for_inference builds its network so: every weight comes from the file next.
  ParameterStore silent(DType::F32, 0);
  silent.set_draw_initial_values(false);
  Conv2d conv(silent, "enc.conv", 2, 4, 3);
  SqueezeExcite se(silent, "enc.se", 16, 4);
  CHECK(silent.parameters().size() == 4);  // conv weight and bias, SE's two weights
  for (const auto& p : silent.parameters())
    for (float v : p.var.value().to_vector()) CHECK(v == 0.0f);
  ParameterStore drawing(DType::F32, 0);
  Conv2d drawn(drawing, "enc.conv", 2, 4, 3);
  const auto w = drawing.parameter("enc.conv.weight").value().to_vector();
  CHECK(std::any_of(w.begin(), w.end(), [](float v) { return v != 0.0f; }));
}

TEST_CASE("save and load round trip through a file") {
  TinyNet a, b;
  a.store.flat_values().fill_(0.25);
  Tensor running_mean = a.store.buffers()[0].value;
  running_mean.fill_(-3.0);
  const std::string path =
      (std::filesystem::temp_directory_path() / ("covidrate_params_" + std::to_string(::getpid()) + ".safetensors"))
          .string();
  a.store.save(path, {{"model", "tiny"}});
  b.store.load(path);
  std::filesystem::remove(path);
  CHECK(b.store.parameter("enc.conv.weight").value().to_vector() == std::vector<float>(72, 0.25f));
  CHECK(b.store.buffers()[0].value.to_vector() == std::vector<float>(4, -3.0f));
}

TEST_CASE("load rejects a missing, an unexpected and a mis-shaped tensor") {
  TinyNet net;
  std::map<std::string, Tensor> good;
  for (const auto& [name, t] : net.store.named_tensors()) good[name] = t.clone();
  CHECK_NOTHROW(net.store.load(good, "good.safetensors"));

  SUBCASE("missing") {
    auto bad = good;
    bad.erase("enc.bn.running_mean");
    const std::string msg = message_of([&] { net.store.load(bad, "w.safetensors"); });
    CHECK(msg.find("missing 'enc.bn.running_mean'") != std::string::npos);
    CHECK(msg.find("w.safetensors") != std::string::npos);
  }
  SUBCASE("unexpected") {
    auto bad = good;
    bad["dec.conv.weight"] = Tensor::zeros(Shape{1});
    CHECK(message_of([&] { net.store.load(bad); }).find("unexpected 'dec.conv.weight'") != std::string::npos);
  }
  SUBCASE("wrong shape") {
    auto bad = good;
    bad["enc.conv.weight"] = Tensor::zeros(Shape{4, 2, 5, 5});
    const std::string msg = message_of([&] { net.store.load(bad); });
    CHECK(msg.find("'enc.conv.weight' is f32[4, 2, 5, 5], the model expects f32[4, 2, 3, 3]") !=
          std::string::npos);
  }
  SUBCASE("wrong dtype") {
    auto bad = good;
    bad["enc.conv.bias"] = Tensor::zeros(Shape{4}, DType::F64);
    CHECK(message_of([&] { net.store.load(bad); }).find("'enc.conv.bias' is f64[4]") != std::string::npos);
  }
  SUBCASE("NaN or infinite values") {
    auto bad = good;
    std::vector<float> weight(72, 0.5f);
    weight[3] = std::nanf("");
    weight[70] = -INFINITY;
    bad["enc.conv.weight"] = Tensor::from_vector(Shape{4, 2, 3, 3}, weight);
    bad["enc.bn.running_var"] = Tensor::full(Shape{4}, INFINITY);
    const std::string msg = message_of([&] { net.store.load(bad, "w.safetensors"); });
    CHECK_MESSAGE(msg.find("w.safetensors: 'enc.bn.running_var' holds 4 NaN or infinite values (of 4) (and 1 more "
                           "tensor); the weights are damaged") == 0, msg);
    bad.erase("enc.bn.running_var");
    bad["enc.bn.running_var"] = good.at("enc.bn.running_var");
    CHECK(message_of([&] { net.store.load(bad); }).find("'enc.conv.weight' holds 2 NaN or infinite values (of 72)") !=
          std::string::npos);
    CHECK(net.store.parameter("enc.conv.weight").value().to_vector() == good.at("enc.conv.weight").to_vector());
    // Half-precision files (the shipped weights are f16) are checked alike.
    bad = good;
    bad["enc.conv.bias"] = Tensor::full(Shape{4}, std::nan("")).to(DType::F16);
    CHECK(message_of([&] { net.store.load(bad); }).find("'enc.conv.bias' holds 4 NaN") != std::string::npos);
    bad["enc.conv.bias"] = good.at("enc.conv.bias").to(DType::F16);
    CHECK_NOTHROW(net.store.load(bad));
  }
  SUBCASE("a failed load changes nothing") {
    auto bad = good;
    bad["enc.conv.bias"] = Tensor::full(Shape{4}, 9.0);
    bad.erase("enc.bn.weight");
    CHECK_THROWS_AS(net.store.load(bad), Error);
    CHECK(net.store.parameter("enc.conv.bias").value().to_vector() == std::vector<float>(4, 0.0f));
  }
}

TEST_CASE("registration errors name the parameter") {
  ParameterStore store;
  Conv2d conv(store, "c", 1, 1, 3);
  CHECK(message_of([&] { Conv2d again(store, "c", 1, 1, 3); }).find("'c.weight' registered twice") !=
        std::string::npos);
  CHECK(message_of([&] { store.add_parameter("d", Tensor::zeros(Shape{1}, DType::F64)); })
            .find("expected a f32 CPU tensor") != std::string::npos);
  store.allocate(Device::CPU);
  CHECK(message_of([&] { BatchNorm2d late(store, "late", 2); }).find("'late.weight' registered after allocate()") !=
        std::string::npos);
}
