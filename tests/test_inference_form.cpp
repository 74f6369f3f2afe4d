// The inference form of COVID-Rate (CovidRateNet::prepare_inference): BN folded
// once, weights cast. In f32 it must compute what evaluation mode computes; it
// must never run with weights older than the parameters.
#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <string>

#include "data/image2d.h"
#include "data/input_domain.h"
#include "data/prepare.h"
#include "kernels/op_profile.h"
#include "model/blocks.h"
#include "model/covidrate_net.h"
#include "model/inference_form.h"
#include "tests/support/test_support.h"
#include "tests/temp_files.h"

using namespace covidrate;

namespace {

// Running statistics and affine parameters of BN "bn" far from its initial
// ones, and biases for convs "a" and "b", so a fold that ignored any would show.
void randomize(ParameterStore& store, uint64_t seed) {
  std::map<std::string, Tensor> t = store.named_tensors();  // views of the parameters
  const Shape shape = t.at("bn.weight").shape();
  t.at("bn.weight").copy_from(test::uniform(shape, seed, 0.5, 2.0, DType::F64));
  t.at("bn.bias").copy_from(test::randn(shape, seed + 1, DType::F64));
  t.at("bn.running_mean").copy_from(test::randn(shape, seed + 2, DType::F64));
  t.at("bn.running_var").copy_from(test::uniform(shape, seed + 3, 0.2, 3.0, DType::F64));
  t.at("a.bias").copy_from(test::randn(shape, seed + 4, DType::F64));
  t.at("b.bias").copy_from(test::randn(shape, seed + 5, DType::F64));
}

// A MedSeg training slice with lesions, prepared as segment and eval prepare it.
Tensor medseg_slice(int64_t size) {
  const std::string path = test::data_dir() + "/medseg-semiseg/train/images/0.jpg";
  const data::PreparedSlice prepared =
      data::prepare_slice(data::to_input_domain(data::read_image(path)), nullptr, nullptr, size);
  return Tensor::from_vector(Shape{1, 1, size, size}, prepared.image);
}

CovidRateNet small_net(uint64_t seed) {
  return CovidRateNet(NetConfig{.width = 0.0625, .cpb = true, .seed = seed});
}

}  // namespace

TEST_CASE("fold_for_inference: a sum of convolutions then BN equals the folded convolutions' sum") {
  // CPB's case: five branches (one 1x1, dilated 3x3s, with biases) summed, one
  // BN after the sum. Float64: only rounding separates the two.
  ParameterStore store(DType::F64, 7);
  Conv2d a(store, "a", 3, 4, 1), b(store, "b", 3, 4, 3, {.dilation = 2}), c(store, "c", 3, 4, 3, {.bias = false});
  Conv2d wide(store, "wide", 3, 5, 1);
  BatchNorm2d bn(store, "bn", 4);
  store.allocate(Device::CPU);
  randomize(store, 11);
  bn.set_training(false);

  const ag::Var x(test::randn(Shape{2, 3, 9, 9}, 5, DType::F64));
  ag::NoGrad no_grad;
  const Tensor expected = bn.forward(ag::add(ag::add(a.forward(x), b.forward(x)), c.forward(x))).value();
  const ChannelAffine affine = batchnorm_affine(bn);
  const std::vector<model::InferenceConv> folded = model::fold_for_inference({&a, &b, &c}, &affine, DType::F64);
  REQUIRE(folded.size() == 3);
  CHECK(folded[0].bias.defined());  // the shift is added once, by the first branch
  CHECK_FALSE(folded[1].bias.defined());
  CHECK_FALSE(folded[2].bias.defined());
  const Tensor actual =
      ag::add(ag::add(folded[0].forward(x), folded[1].forward(x)), folded[2].forward(x)).value();
  CHECK(test::closeness(actual, expected, 1e-12, 1e-12) <= 1);

  CHECK_THROWS_WITH_AS(model::fold_for_inference({&a, &wide}, nullptr, DType::F64),
                       doctest::Contains("'wide' has 5 output channels, 'a' 4"), Error);
}

TEST_CASE("the four-phase form of an upsampled 3x3 convolution equals the convolution of the upsampled map") {
  // model::InferenceUpsampleConv: conv3x3(upsample2x(x)) + BN (+ ReLU) as a
  // 2x2 convolution with four output phases at x's resolution, interleaved.
  // Float64, a non-square map (rows and columns must not be swapped), odd
  // sizes, random BN statistics and bias: only rounding separates the two.
  ParameterStore store(DType::F64, 3);
  Conv2d a(store, "a", 3, 4, 3), b(store, "b", 3, 4, 1);  // b: randomize() wants its bias
  Conv2d plain(store, "plain", 3, 2, 3, {.bias = false});
  Conv2d dilated(store, "dilated", 3, 4, 3, {.dilation = 2});
  BatchNorm2d bn(store, "bn", 4);
  store.allocate(Device::CPU);
  randomize(store, 17);
  bn.set_training(false);
  const ChannelAffine affine = batchnorm_affine(bn);

  const ag::Var x(test::randn(Shape{2, 3, 5, 7}, 9, DType::F64));
  ag::NoGrad no_grad;
  const ag::Var upsampled_conv = bn.forward(a.forward(ag::upsample2x(x)));
  for (const bool relu : {false, true}) {
    CAPTURE(relu);
    const Tensor expected = relu ? ag::relu(upsampled_conv).value() : upsampled_conv.value();
    const model::InferenceUpsampleConv form = model::upsample_conv_for_inference(a, &affine, relu, DType::F64);
    CHECK(form.phases.value().shape() == (Shape{16, 3, 2, 2}));
    const Tensor actual = form.forward(x).value();
    REQUIRE(actual.shape() == (Shape{2, 4, 10, 14}));
    CHECK(test::closeness(actual, expected, 1e-12, 1e-12) <= 1);
  }

  // Without BN and without a bias: the phases alone, no bias to add.
  const model::InferenceUpsampleConv bare = model::upsample_conv_for_inference(plain, nullptr, false, DType::F64);
  CHECK_FALSE(bare.bias.defined());
  CHECK(test::closeness(bare.forward(x).value(), plain.forward(ag::upsample2x(x)).value(), 1e-12, 1e-12) <= 1);

  // Only a 3x3 "same" convolution has this form.
  CHECK_THROWS_WITH_AS(model::upsample_conv_for_inference(dilated, nullptr, false, DType::F64),
                       doctest::Contains("only a 3x3 'same' convolution"), Error);
}

TEST_CASE("the f32 inference form equals evaluation mode on a real MedSeg slice (shipped full-width weights)") {
  // The shipped network at width 1 and 512 x 512, as `covidrate segment` runs
  // it. Evaluation mode folds BN per call except in CPB (BN after the branch
  // sum) and runs the head and transitions from the parameters; the inference
  // form folds CPB into its branches too and rounds every f64 fold once, so
  // the two differ by f32 rounding only.
  const std::string weights = test::source_dir() + "/weights/covidrate-w1-s512.safetensors";
  REQUIRE(std::filesystem::is_regular_file(weights));
  CovidRateNet net(NetConfig{.width = 1.0});
  net.parameters().load(weights);
  net.set_training(false);
  const ag::Var image(medseg_slice(512));
  const Tensor expected = net.forward(image).value();

  // Both ways of running the decoders' upsampling and up-conv: four phases
  // (the default; on the CPU Winograd F(4x4, 2x2)) and upsample, then the 3x3
  // conv (Winograd F(4x4, 3x3)).
  using Upsample = SegmentationNet::UpsampleConv;
  for (const Upsample upsample : {Upsample::Upsampled, Upsample::Phases}) {
    const std::string form = upsample == Upsample::Upsampled ? "upsampled" : "four-phase";
    CAPTURE(form);
    net.prepare_inference(DType::F32, upsample);
    REQUIRE(net.has_inference_form());
    CHECK(net.compute_dtype() == DType::F32);
    const Tensor actual = net.forward(image).value();
    REQUIRE(actual.dtype() == DType::F32);
    REQUIRE(actual.shape() == expected.shape());

    int64_t lesion = 0, disagree = 0;
    const std::vector<float> p = actual.to_vector(), q = expected.to_vector();
    for (size_t i = 0; i < p.size(); ++i) {
      lesion += q[i] > 0.5f;
      disagree += (p[i] > 0.5f) != (q[i] > 0.5f);
    }
    const double max_diff = test::closeness(actual, expected, 0, 1.0);
    MESSAGE("width 1, 512 x 512, MedSeg train 0.jpg, " << form << " decoders: " << lesion
                                                       << " lesion pixels, max |p_form - p_eval| = " << max_diff
                                                       << ", rel L2 " << test::rel_l2(actual, expected) << ", "
                                                       << disagree << " pixels change side of 0.5");
    CHECK(lesion > 1000);  // the slice has lesions for the network to find
    CHECK(test::closeness(actual, expected, 1e-5, 1e-6) <= 1);
    CHECK(disagree == 0);
  }
}

TEST_CASE("at batch 1 the decoders write both paths into their concatenation in place: the same values, no copy") {
  CovidRateNet net(NetConfig{.width = 0.25, .seed = 5});
  net.set_training(false);
  net.prepare_inference(DType::F32);
  const auto concat_calls = [] {
    int64_t calls = 0;
    for (const profile::OpTime& t : profile::collect())
      if (t.op == "concat_channels_forward") calls += t.calls;
    return calls;
  };
  const auto run = [&](const Tensor& image, bool in_place, int64_t& concats) {
    model::set_decoder_concat_in_place(in_place);
    profile::reset();
    profile::set_enabled(true);
    const Tensor p = net.forward(ag::Var(image)).value().clone();
    profile::set_enabled(false);
    concats = concat_calls();
    model::set_decoder_concat_in_place(true);
    return p;
  };
  int64_t concats = -1;
  const Tensor one = test::randn(Shape{1, 1, 64, 64}, 17);
  const std::vector<float> copied = run(one, false, concats).to_vector();
  CHECK(concats == 4);  // one per decoder
  const std::vector<float> in_place = run(one, true, concats).to_vector();
  CHECK(concats == 0);
  CHECK(in_place == copied);  // the same ops on the same values, written elsewhere
  // Two images: each one's halves are apart in [2, 2C, H, W], so they are copied.
  const Tensor two = test::randn(Shape{2, 1, 64, 64}, 18);
  run(two, true, concats);
  CHECK(concats == 4);
}

TEST_CASE("the inference form is dropped by training and rebuilt from the new weights") {
  CovidRateNet net = small_net(3);
  const ag::Var image(test::randn(Shape{2, 1, 64, 64}, 4));
  net.set_training(false);
  net.prepare_inference(DType::F32);
  const Tensor before = net.forward(image).value();

  // A training forward moves every BN's running statistics: the old folded
  // weights are now wrong.
  net.set_training(true);
  CHECK_FALSE(net.has_inference_form());
  CHECK(net.compute_dtype() == DType::F32);
  {
    ag::NoGrad no_grad;
    for (int i = 0; i < 3; ++i) net.forward(image);
  }
  net.set_training(false);
  CHECK_FALSE(net.has_inference_form());  // not rebuilt behind the caller's back
  const Tensor evaluation = net.forward(image).value();  // per-call folding: always current
  CHECK(test::closeness(evaluation, before, 0, 1e-4) > 1);

  net.prepare_inference(DType::F32);
  const Tensor rebuilt = net.forward(image).value();
  CHECK(test::closeness(rebuilt, evaluation, 1e-5, 1e-6) <= 1);
}

TEST_CASE("a load or a move after prepare_inference is refused until it is prepared again") {
  test::TempDir dir;
  CovidRateNet other = small_net(8);
  other.parameters().save(dir.file("other.safetensors"));

  CovidRateNet net = small_net(3);
  const ag::Var image(test::randn(Shape{1, 1, 32, 32}, 4));
  net.set_training(false);
  net.prepare_inference(DType::F32);
  net.parameters().load(dir.file("other.safetensors"));
  CHECK_THROWS_WITH_AS(net.forward(image), doctest::Contains("loaded or moved after prepare_inference"), Error);

  net.prepare_inference(DType::F32);
  other.set_training(false);
  CHECK(test::closeness(net.forward(image).value(), other.forward(image).value(), 1e-5, 1e-6) <= 1);
}

TEST_CASE("prepare_inference refuses training mode and dtypes the parameters cannot compute in") {
  CovidRateNet net = small_net(3);
  CHECK_THROWS_WITH_AS(net.prepare_inference(DType::F32), doctest::Contains("set_training(false) first"), Error);
  net.set_training(false);
  CHECK_THROWS_WITH_AS(net.prepare_inference(DType::F64), doctest::Contains("cannot compute in f64 with f32"),
                       Error);
  CHECK_FALSE(net.has_inference_form());

  CovidRateNet f64(NetConfig{.width = 0.0625, .cpb = true, .seed = 3, .dtype = DType::F64});
  f64.set_training(false);
  CHECK_THROWS_WITH_AS(f64.prepare_inference(DType::BF16), doctest::Contains("cannot compute in bf16 with f64"),
                       Error);
}
