// The paper's baselines (model/unet.h: U-Net, Attention U-Net; COVID-Rate
// without SE): parameter counts from the architecture's own description,
// finite-difference gradients through every kind of layer (the attention gate
// included), the inference form against evaluation mode, weights that name
// their architecture, training on real slices, and the command line.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "data/dataset.h"
#include "data/prepare.h"
#include "model/covidrate_net.h"
#include "model/load_weights.h"
#include "model/trainer.h"
#include "model/unet.h"
#include "model/unet_plus_plus.h"
#include "nn/safetensors.h"
#include "tests/support/run_covidrate.h"
#include "tests/support/test_support.h"
#include "tests/temp_files.h"

using namespace covidrate;
namespace fs = std::filesystem;

namespace {

NetConfig config_of(Architecture architecture, double width, DType dtype = DType::F32, uint64_t seed = 3) {
  NetConfig c;
  c.architecture = architecture;
  c.width = width;
  c.dtype = dtype;
  c.seed = seed;
  return c;
}

// Trainable elements of the U-Net of model/unet.h, counted from its
// description: every 3x3 conv has a bias and a BN (gamma, beta); the gate's
// three 1x1 convs have q = skip/2 channels, a bias on Wg and on psi.
int64_t expected_unet_params(double width, bool attention) {
  auto ch = [&](int c) { return static_cast<int64_t>(scaled_channels(c, width)); };
  auto conv_bn = [](int64_t i, int64_t o) { return 9 * i * o + o + 2 * o; };
  auto level = [&](int64_t i, int64_t o) { return conv_bn(i, o) + conv_bn(o, o); };
  int64_t total = 0, in = 1;
  std::vector<int64_t> skips;
  for (const int base : {64, 128, 256, 512, 1024}) {
    total += level(in, ch(base));
    in = ch(base);
    skips.push_back(in);
  }
  for (int i = 0; i < 4; ++i) {
    const int64_t s = skips[3 - i], q = std::max<int64_t>(1, s / 2);
    total += conv_bn(in, s) + level(2 * s, s);
    if (attention) total += s * q + (s * q + q) + (q + 1);
    in = s;
  }
  return total + in + 1;  // head: 1x1 to one channel
}

// U-Net++ of model/unet_plus_plus.h from its description: node X(i,j) takes
// j maps of its own depth and the upsampled one below, two 3x3 conv + BN.
int64_t expected_unetpp_params(double width) {
  auto conv_bn = [](int64_t i, int64_t o) { return 9 * i * o + o + 2 * o; };
  std::vector<int64_t> c;
  for (const int base : {32, 64, 128, 256, 512}) c.push_back(scaled_channels(base, width));
  int64_t total = 0;
  for (int j = 0; j <= 4; ++j)
    for (int i = 0; i + j <= 4; ++i) {
      const int64_t in = j == 0 ? (i == 0 ? 1 : c[i - 1]) : j * c[i] + c[i + 1];
      total += conv_bn(in, c[i]) + conv_bn(c[i], c[i]);
    }
  return total + c[0] + 1;
}

int64_t count_named(const ParameterStore& store, const std::string& part) {
  int64_t n = 0;
  for (const auto& p : store.parameters())
    if (p.trainable && p.name.find(part) != std::string::npos) n += p.var.value().numel();
  return n;
}

std::string medseg(const char* sub) { return test::data_dir() + "/medseg-semiseg/train/" + sub; }

}  // namespace

TEST_CASE("baselines: names, parameter counts and FLOPs") {
  CHECK(parse_architecture("unet") == Architecture::UNet);
  CHECK(parse_architecture("attention-unet") == Architecture::AttentionUNet);
  CHECK(std::string(to_string(Architecture::CovidRate)) == "covid-rate");
  try {
    parse_architecture("segformer");
    FAIL("no error");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(m.find("'segformer'") != std::string::npos);
    CHECK(m.find("covid-rate, unet, attention-unet, unet++") != std::string::npos);
  }

  // Ronneberger's channel plan (64..1024) with BN and a 3x3 up-convolution.
  CHECK(expected_unet_params(1.0, false) == 34'525'889);
  CHECK(UNet(config_of(Architecture::UNet, 1.0)).param_count() == 34'525'889);
  for (const double width : {0.125, 0.25}) {
    for (const bool attention : {false, true}) {
      INFO("width " << width << (attention ? " with" : " without") << " attention");
      const UNet net(config_of(attention ? Architecture::AttentionUNet : Architecture::UNet, width));
      CHECK(net.param_count() == expected_unet_params(width, attention));
      CHECK(net.has_attention() == attention);
      CHECK((count_named(net.parameters(), ".gate.") > 0) == attention);
      // The stage table accounts for every parameter and FLOP.
      const auto rows = net.summary(256, 256);
      REQUIRE(rows.size() == 10);
      int64_t params = 0;
      double flops = 0;
      for (const auto& r : rows) params += r.parameters, flops += r.flops;
      CHECK(params == net.param_count());
      CHECK(flops == doctest::Approx(net.forward_flops(256, 256)).epsilon(1e-12));
      CHECK(rows[4].name == "bridge");
      CHECK(rows[4].output == Shape{scaled_channels(1024, width), 16, 16});
      CHECK(rows.back().output == Shape{1, 256, 256});
    }
  }
  // FLOPs by hand at width 1, 512 x 512: each level's two 3x3 convs, the
  // up-convolutions, the head (2 x multiply-adds).
  double macs = 0;
  const int c[] = {64, 128, 256, 512, 1024};
  int in = 1;
  for (int i = 0; i < 5; ++i) {
    const double pixels = std::pow(512.0 / (1 << i), 2);
    macs += pixels * 9.0 * (in * c[i] + c[i] * c[i]);
    in = c[i];
  }
  for (int i = 3; i >= 0; --i) {
    const double pixels = std::pow(512.0 / (1 << i), 2);
    macs += pixels * 9.0 * (c[i + 1] * c[i] + 2 * c[i] * c[i] + c[i] * c[i]);
  }
  macs += 512.0 * 512.0 * 64;
  CHECK(UNet(config_of(Architecture::UNet, 1.0)).forward_flops(512, 512) == doctest::Approx(2 * macs).epsilon(1e-12));

  // U-Net++: fifteen nodes and the head, Zhou et al.'s 32..512 channels.
  CHECK(expected_unetpp_params(1.0) == 9'162'753);
  for (const double width : {1.0, 0.25}) {
    const UNetPlusPlus net(config_of(Architecture::UNetPlusPlus, width));
    CHECK(net.param_count() == expected_unetpp_params(width));
    const auto rows = net.summary(128, 128);
    REQUIRE(rows.size() == 16);
    int64_t params = 0;
    for (const auto& r : rows) params += r.parameters;
    CHECK(params == net.param_count());
    CHECK(rows[14].name == "x0_4");
    CHECK(rows[4].name == "x4_0");
    CHECK(rows[4].output == Shape{scaled_channels(512, width), 8, 8});
  }

  // COVID-Rate without SE: exactly its SE tensors go, the paper's "Residual U-Net with CPB".
  NetConfig no_se = config_of(Architecture::CovidRate, 0.25);
  const CovidRateNet with(no_se);
  no_se.se = false;
  const CovidRateNet without(no_se);
  CHECK(count_named(with.parameters(), ".se.") > 0);
  CHECK(count_named(without.parameters(), ".se.") == 0);
  CHECK(without.param_count() == with.param_count() - count_named(with.parameters(), ".se."));
  CHECK(describe(no_se) == "COVID-Rate, width 0.25, without SE");

  // Each class builds only its own architecture; U-Net has no CPB or SE to switch off.
  CHECK_THROWS_AS(CovidRateNet(config_of(Architecture::UNet, 0.25)), Error);
  NetConfig unet_no_cpb = config_of(Architecture::UNet, 0.25);
  unet_no_cpb.cpb = false;
  CHECK_THROWS_AS(make_network(unet_no_cpb), Error);
  CHECK(make_network(config_of(Architecture::AttentionUNet, 0.25))->param_count() ==
        expected_unet_params(0.25, true));
}

TEST_CASE("attention gate: a weight in (0, 1) per pixel, the same for every channel") {
  ParameterStore store(DType::F64, 7);
  model::CostLedger costs;
  const model::AttentionGate gate(model::BlockSite{store, costs, "dec1", 1}, 8, 8);
  store.allocate(Device::CPU);
  ag::NoGrad no_tape;
  const ag::Var skip(test::randn(Shape{2, 8, 6, 6}, 1, DType::F64));
  const ag::Var up(test::randn(Shape{2, 8, 6, 6}, 2, DType::F64));
  const ag::Var a = gate.coefficients(skip, up);
  REQUIRE(a.value().shape() == (Shape{2, 1, 6, 6}));
  const std::vector<double> av = a.value().to_vector_f64(), x = skip.value().to_vector_f64();
  const std::vector<double> y = gate.forward(skip, up).value().to_vector_f64();
  double lo = 1, hi = 0;
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 8; ++c)
      for (int64_t p = 0; p < 36; ++p) {
        const double weight = av[static_cast<size_t>(n * 36 + p)];
        lo = std::min(lo, weight), hi = std::max(hi, weight);
        const size_t i = static_cast<size_t>((n * 8 + c) * 36 + p);
        CHECK(y[i] == doctest::Approx(x[i] * weight).epsilon(1e-15));
      }
  CHECK(lo > 0);
  CHECK(hi < 1);
  CHECK(hi - lo > 1e-3);  // it does weigh pixels differently
}

// Width 0.125, batch 2, 32 x 32, float64, training mode, through the hybrid
// loss: the tape against central differences, as tests/test_model.cpp does for
// COVID-Rate. The loss is only piecewise smooth (ReLUs, and here max pooling,
// whose ReLU-zeroed windows are ties), and an enc1 weight moves every pixel of
// a channel: at h = 1e-6 the differences for one were off by 0.1-1 %, at 1e-5
// by 1-6 % (measured); at 1e-7 and 1e-8 they agree with the tape to 1e-6 or
// better. Rounding then costs up to ~1e-15 * loss / h ~ 1e-8 (the loss sums
// 2048 pixels): the absolute tolerance 5e-8 (gradients here are 1e-5 to 1).
TEST_CASE("baselines: tape gradients match finite differences (f64)") {
  for (const Architecture architecture :
       {Architecture::AttentionUNet, Architecture::UNetPlusPlus, Architecture::CovidRate}) {
    NetConfig config = config_of(architecture, 0.125, DType::F64, 5);
    // COVID-Rate without SE: test_model checks it with SE; U-Net has none to switch off.
    config.se = architecture != Architecture::CovidRate;
    const std::unique_ptr<SegmentationNet> net = make_network(config);
    net->set_training(true);
    const Tensor image = test::randn(Shape{2, 1, 32, 32}, 11, DType::F64);
    Tensor target = Tensor::zeros(Shape{2, 1, 32, 32}, DType::F64);
    double* t = target.data<double>();
    for (int64_t i = 0; i < target.numel(); ++i) {
      const int64_t y = (i % 1024) / 32, x = i % 32;
      t[i] = (x - 14) * (x - 14) + (y - 18) * (y - 18) < 40 ? 1.0 : 0.0;
    }
    ag::Var input(image, /*requires_grad=*/true);
    net->parameters().zero_grad();
    {
      ag::Tape tape;
      tape.backward(ag::hybrid_loss(net->forward(input), target, HybridLossParams{}));
    }
    auto loss_now = [&] {
      ag::NoGrad no_tape;
      return ag::hybrid_loss(net->forward(ag::Var(image)), target, HybridLossParams{}).value().to_vector_f64()[0];
    };
    const auto numeric = [&](const Tensor& v, int64_t i) { return test::central_difference(v, i, 1e-7, loss_now); };
    const std::vector<std::string> names =
        architecture == Architecture::CovidRate
            ? std::vector<std::string>{"enc1.unit1.conv2.weight", "dec2.conv.weight", "dec4.bn.bias"}
        : architecture == Architecture::UNetPlusPlus
            ? std::vector<std::string>{"x0_0.conv1.weight", "x1_1.conv1.weight", "x3_1.bn2.bias",
                                       "x0_4.conv2.weight", "x2_2.conv1.weight", "head.conv.weight"}
            : std::vector<std::string>{"enc1.conv1.weight", "enc3.bn2.weight", "bridge.conv2.weight",
                                       "dec1.up_conv.weight", "dec1.gate.skip.weight", "dec2.gate.up.bias",
                                       "dec4.gate.psi.weight", "dec4.gate.psi.bias", "dec4.conv2.weight",
                                       "head.conv.bias"};
    for (const std::string& name : names) {
      const ag::Var& p = net->parameters().parameter(name);
      const int64_t n = p.value().numel();
      for (const int64_t at : {int64_t{0}, n / 2, n - 1}) {
        const double tape = p.grad().to_vector_f64()[static_cast<size_t>(at)], fd = numeric(p.value(), at);
        INFO(to_string(architecture) << " " << name << "[" << at << "]: tape " << tape << ", differences " << fd);
        CHECK(std::fabs(tape - fd) <= 5e-8 + 1e-5 * std::max(std::fabs(tape), std::fabs(fd)));
      }
    }
    for (const int64_t pixel : {int64_t{0}, int64_t{517}, int64_t{2047}}) {
      const double tape = input.grad().to_vector_f64()[static_cast<size_t>(pixel)], fd = numeric(image, pixel);
      INFO(to_string(architecture) << " input[" << pixel << "]: tape " << tape << ", differences " << fd);
      CHECK(std::fabs(tape - fd) <= 5e-8 + 1e-5 * std::max(std::fabs(tape), std::fabs(fd)));
    }
  }
}

TEST_CASE("baselines: the inference form equals evaluation mode; bf16 stays close") {
  for (const Architecture architecture : {Architecture::UNet, Architecture::AttentionUNet, Architecture::UNetPlusPlus}) {
    INFO(to_string(architecture));
    const std::unique_ptr<SegmentationNet> net = make_network(config_of(architecture, 0.25));
    // Non-trivial BN statistics: a few steps in training mode move them.
    const ag::Var image(test::randn(Shape{2, 1, 64, 64}, 4));
    for (int i = 0; i < 3; ++i) net->forward(image);
    net->set_training(false);
    const Tensor evaluation = net->forward(image).value();
    // Both ways of running the U-Nets' upsampling and up-conv (InferenceUpsampleConv).
    for (const auto upsample : {SegmentationNet::UpsampleConv::Upsampled, SegmentationNet::UpsampleConv::Phases}) {
      net->prepare_inference(DType::F32, upsample);
      CHECK(net->has_inference_form());
      const Tensor folded = net->forward(image).value();
      CHECK(test::closeness(folded, evaluation, 1e-5, 1e-6) <= 1);
    }
    net->set_training(false);  // drops nothing: only training does
    CHECK(net->has_inference_form());
    net->set_training(true);
    CHECK(!net->has_inference_form());
    net->set_training(false);
    net->prepare_inference(DType::BF16);
    const Tensor bf16 = net->forward(image).value();
    CHECK(bf16.dtype() == DType::F32);
    CHECK(test::count_nonfinite(bf16) == 0);
    CHECK(test::closeness(bf16, evaluation, 0, 0.05) <= 1);
  }
}

TEST_CASE("baselines: weights name their architecture; eval rebuilds it from the file") {
  test::TempDir dir;
  const NetConfig config = config_of(Architecture::AttentionUNet, 0.125);
  const std::unique_ptr<SegmentationNet> trained = make_network(config);
  std::map<std::string, std::string> metadata = architecture_metadata(config);
  metadata["size"] = "64";
  const std::string path = dir.file("w.safetensors");
  trained->parameters().save(path, metadata);

  const ModelSpec spec = resolve_model_spec(path, safetensors::load_metadata(path), {});
  CHECK(spec.config.architecture == Architecture::AttentionUNet);
  CHECK(spec.config.width == 0.125);
  CHECK(spec.size == 64);
  const std::unique_ptr<SegmentationNet> loaded = load_for_inference(path, spec, Device::CPU);
  trained->set_training(false);
  const ag::Var image(test::randn(Shape{1, 1, 64, 64}, 9));
  CHECK(test::closeness(loaded->forward(image).value(), trained->forward(image).value(), 1e-5, 1e-6) <= 1);

  // An override wins over the file; loading the wrong architecture names the tensors.
  ArchitectureOverrides as_covidrate;
  as_covidrate.architecture = Architecture::CovidRate;
  const ModelSpec wrong = resolve_model_spec(path, safetensors::load_metadata(path), as_covidrate);
  CHECK(wrong.config.architecture == Architecture::CovidRate);
  CHECK_THROWS_AS(load_for_inference(path, wrong, Device::CPU), Error);

  // An unknown architecture in the metadata: the file and the name.
  metadata["architecture"] = "segformer";
  trained->parameters().save(path, metadata);
  try {
    resolve_model_spec(path, safetensors::load_metadata(path), {});
    FAIL("no error");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(m.find(path) != std::string::npos);
    CHECK(m.find("'segformer'") != std::string::npos);
  }
}

TEST_CASE("baselines: an Attention U-Net learns four real slices") {
  const data::Dataset set = data::load_dataset(medseg("images"), medseg("masks"));
  std::vector<data::PreparedSlice> four;
  for (const data::Sample& s : set.samples) {
    double lesion = 0;
    for (float v : s.mask.voxels) lesion += v;
    if (lesion / static_cast<double>(s.mask.voxels.size()) > 0.02 && four.size() < 4)
      four.push_back(data::prepare_sample(s, 64));
  }
  REQUIRE(four.size() == 4);
  test::TempDir dir;
  TrainOptions o;
  o.model = config_of(Architecture::AttentionUNet, 0.125);
  o.size = 64;
  o.batch = 4;
  o.epochs = 40;
  o.patience = 1000;
  o.augment = false;
  o.adam.lr = 3e-3;
  o.out_dir = dir.path();
  const TrainResult r = train(four, {}, o);
  REQUIRE(r.epochs.size() == 40);
  CHECK(r.epochs.back().train_loss < 0.5 * r.epochs.front().train_loss);
  const std::map<std::string, std::string> saved = safetensors::load_metadata(dir.file("best.safetensors"));
  CHECK(saved.at("architecture") == "attention-unet");
  const std::unique_ptr<SegmentationNet> net = make_network(o.model);
  net->parameters().load(dir.file("checkpoint/weights.safetensors"));
  const Evaluation e = evaluate(*net, four, 4, loss_params(o.loss, o.pos_weight));
  MESSAGE("Attention U-Net after 40 steps: train loss ", r.epochs.back().train_loss, ", Dice ", e.mean_dice);
  CHECK(e.mean_dice > 0.8);
}

TEST_CASE("covidrate model, train, eval: --arch and --no-se") {
  test::TempDir dir;
  test::ProgramRun run = test::run_covidrate(dir, "model --arch unet --json");
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.out.find("\"architecture\": \"unet\"") != std::string::npos);
  CHECK(run.out.find("\"parameters\": 34525889") != std::string::npos);
  run = test::run_covidrate(dir, "model --arch attention-unet --width 0.25");
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.out.find("Attention U-Net, width 0.25") != std::string::npos);
  CHECK(run.out.find(std::to_string(expected_unet_params(0.25, true))) != std::string::npos);
  run = test::run_covidrate(dir, "model --arch unet++ --width 0.25 --size 128");
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.out.find("U-Net++, width 0.25") != std::string::npos);
  CHECK(run.out.find(std::to_string(expected_unetpp_params(0.25))) != std::string::npos);
  run = test::run_covidrate(dir, "model --no-se --width 0.25");
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.out.find("without SE") != std::string::npos);

  run = test::run_covidrate(dir, "model --arch unet3+");
  CHECK(run.exit_code == 2);
  CHECK(run.err.find("unet3+") != std::string::npos);
  run = test::run_covidrate(dir, "model --arch unet --no-cpb");
  CHECK(run.exit_code == 2);
  CHECK(run.err.find("COVID-Rate's") != std::string::npos);

  // Train one epoch of a U-Net from the command line; eval finds the architecture in the weights.
  const std::string images = dir.file("images"), masks = dir.file("masks");
  fs::create_directories(images);
  fs::create_directories(masks);
  for (const char* n : {"0", "1", "2", "3"}) {
    fs::copy_file(medseg("images") + "/" + n + ".jpg", images + "/" + n + ".jpg");
    fs::copy_file(medseg("masks") + "/" + n + ".png", masks + "/" + n + ".png");
  }
  const std::string data = " --images " + images + " --masks " + masks;
  run = test::run_covidrate(dir, "train --arch unet --no-se" + data + " --out " + dir.file("bad"));
  CHECK(run.exit_code == 2);
  CHECK(!fs::exists(dir.file("bad")));
  run = test::run_covidrate(dir, "train --arch bogus" + data + " --out " + dir.file("bad"));
  CHECK(run.exit_code == 2);
  CHECK(run.err.find("'bogus'") != std::string::npos);

  run = test::run_covidrate(dir, "train --arch unet --width 0.0625 --size 32 --epochs 1 --batch 2" + data +
                                     " --out " + dir.file("run"));
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.out.find("training U-Net, width 0.0625 on 3 slices") != std::string::npos);
  run = test::run_covidrate(dir, "eval --weights " + dir.file("run/best.safetensors") + data + " --json");
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.err.find("U-Net, width 0.0625, input 32 x 32") != std::string::npos);
  CHECK(run.out.find("\"dice\"") != std::string::npos);

  // segment runs it too, and its report says which network it ran.
  run = test::run_covidrate(dir, "segment " + images + "/0.jpg " + images + "/1.jpg --weights " +
                                     dir.file("run/best.safetensors") + " --out " + dir.file("seg"));
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  const std::string report = test::read_text_file(dir.file("seg/report.json"));
  CHECK(report.find("\"architecture\": \"unet\"") != std::string::npos);
  CHECK(report.find("\"se\": true") != std::string::npos);
  CHECK(fs::exists(dir.file("seg/masks/0.png")));
}
