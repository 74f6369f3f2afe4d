// Training: the data set and its splits, input preparation and its inverse,
// augmentation alignment, overfitting real slices, and resume after a kill
// giving the same bits as a run never interrupted.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "data/augment.h"
#include "data/dataset.h"
#include "data/image2d.h"
#include "data/prepare.h"
#include "model/covidrate_net.h"
#include "model/trainer.h"
#include "nn/error.h"
#include "nn/safetensors.h"
#include "tests/support/run_covidrate.h"
#include "tests/support/test_support.h"
#include "tests/temp_files.h"

using namespace covidrate;
using namespace covidrate::data;
namespace fs = std::filesystem;

namespace {

std::string medseg(const char* sub) { return test::data_dir() + "/medseg-semiseg/train/" + sub; }

Volume picture(int64_t nx, int64_t ny, float fill, Intensity intensity) {
  Volume v;
  v.nx = nx, v.ny = ny, v.nz = 1;
  v.voxels.assign(static_cast<size_t>(nx * ny), fill);
  v.intensity = intensity;
  return v;
}

void rect(std::vector<float>& v, int64_t nx, int64_t x0, int64_t y0, int64_t x1, int64_t y1, float value) {
  for (int64_t y = y0; y < y1; ++y)
    for (int64_t x = x0; x < x1; ++x) v[static_cast<size_t>(y * nx + x)] = value;
}

void write_gray(const std::string& path, int64_t n, uint8_t value) {
  std::vector<uint8_t> pixels(static_cast<size_t>(n * n), value);
  pixels[0] = 0;  // two values: a mask when value is 255
  write_png_gray(path, pixels.data(), n, n);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

double dice(const std::vector<float>& a, const std::vector<float>& b) {
  double both = 0, total = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    both += (a[i] > 0.5f) * (b[i] > 0.5f);
    total += (a[i] > 0.5f) + (b[i] > 0.5f);
  }
  return total > 0 ? 2 * both / total : 1;
}

bool same_bits(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, t] : a) {
    const auto it = b.find(name);
    if (it == b.end() || it->second.shape() != t.shape()) return false;
    const std::vector<float> x = t.to_vector(), y = it->second.to_vector();
    if (std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) != 0) return false;
  }
  return true;
}

// Every file under `dir`, by path relative to it, with its bytes: a folder's
// state, to show that a refused run left it as it was.
std::map<std::string, std::string> folder_contents(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const fs::directory_entry& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::vector<char> bytes = test::read_bytes(e.path().string());
    files[fs::relative(e.path(), dir).string()] = std::string(bytes.begin(), bytes.end());
  }
  return files;
}

}  // namespace

TEST_CASE("dataset: the MedSeg training folder loads as 50 matched pairs") {
  const Dataset set = load_dataset(medseg("images"), medseg("masks"));
  REQUIRE(set.size() == 50);
  CHECK(set.samples[0].name == "0");
  CHECK(set.samples[2].name == "2");  // numeric order, not "10" after "1"
  for (const Sample& s : set.samples) {
    CHECK(s.image.nx == s.mask.nx);
    CHECK(s.image.ny == s.mask.ny);
    CHECK(s.mask.intensity == Intensity::Label);
    CHECK(!s.has_lungs());
    CHECK(std::all_of(s.mask.voxels.begin(), s.mask.voxels.end(), [](float v) { return v == 0.f || v == 1.f; }));
  }
}

TEST_CASE("dataset: optional lung masks, and preparation keeps only the lungs") {
  const Dataset set = load_dataset(medseg("images"), medseg("masks"), {.lungs = true});
  const Sample& s = set.samples[5];
  REQUIRE(s.has_lungs());
  REQUIRE(s.lungs.voxels.size() == s.image.voxels.size());
  double lung = 0, lesion_in_lung = 0, lesion = 0;
  for (size_t i = 0; i < s.lungs.voxels.size(); ++i) {
    lung += s.lungs.voxels[i];
    lesion += s.mask.voxels[i];
    lesion_in_lung += s.mask.voxels[i] * s.lungs.voxels[i];
  }
  const double fraction = lung / static_cast<double>(s.lungs.voxels.size());
  MESSAGE("slice 5: lungs cover ", fraction, ", ", lesion_in_lung / lesion, " of the lesion inside them");
  CHECK(fraction > 0.1);
  CHECK(fraction < 0.8);
  // Outside the lungs every prepared pixel holds one value (0 before standardizing).
  const PreparedSlice p = prepare_sample(s, 64);
  CHECK(p.image[0] == p.image[63]);
  CHECK(p.image[0] < *std::max_element(p.image.begin(), p.image.end()));
}

TEST_CASE("dataset: errors name the file") {
  test::TempDir dir;
  const std::string images = dir.file("images"), masks = dir.file("masks");
  fs::create_directories(images);
  fs::create_directories(masks);
  write_gray(images + "/a.png", 16, 100);
  write_gray(masks + "/a.png", 16, 255);

  write_gray(images + "/b.png", 16, 100);  // no mask
  std::string message = error_of([&] { load_dataset(images, masks); });
  CHECK(message.find("b.png") != std::string::npos);
  CHECK(message.find("no mask") != std::string::npos);
  fs::remove(images + "/b.png");

  write_gray(masks + "/c.png", 16, 255);  // no image
  message = error_of([&] { load_dataset(images, masks); });
  CHECK(message.find("c.png") != std::string::npos);
  CHECK(message.find("no image") != std::string::npos);

  test::write_bytes(images + "/c.jpg", test::garbage(300, 1));  // unreadable image
  message = error_of([&] { load_dataset(images, masks); });
  CHECK(message.find("c.jpg") != std::string::npos);
  fs::remove(images + "/c.jpg");
  fs::remove(masks + "/c.png");

  write_gray(images + "/d.png", 16, 100);  // grey, not binary, mask
  write_gray(masks + "/d.png", 16, 100);
  message = error_of([&] { load_dataset(images, masks); });
  CHECK(message.find("d.png") != std::string::npos);
  CHECK(message.find("not binary") != std::string::npos);
  fs::remove(masks + "/d.png");
  write_gray(masks + "/d.png", 20, 255);  // wrong size
  message = error_of([&] { load_dataset(images, masks); });
  CHECK(message.find("d.png") != std::string::npos);
  CHECK(message.find("20 x 20") != std::string::npos);

  CHECK(error_of([&] { load_dataset(dir.file("nowhere"), masks); }).find("nowhere") != std::string::npos);
}

TEST_CASE("dataset: seeded splits are disjoint, complete and reproducible") {
  const Split s = train_validation_split(50, 0.2, 7);
  CHECK(s.validation.size() == 10);
  CHECK(s.train.size() == 40);
  std::set<int64_t> all(s.train.begin(), s.train.end());
  all.insert(s.validation.begin(), s.validation.end());
  CHECK(all.size() == 50);
  CHECK(train_validation_split(50, 0.2, 7).validation == s.validation);
  CHECK(train_validation_split(50, 0.2, 8).validation != s.validation);
  CHECK(train_validation_split(5, 0.01, 0).validation.size() == 1);  // at least one

  const std::vector<Split> folds = k_fold_splits(11, 3, 1);
  REQUIRE(folds.size() == 3);
  std::multiset<int64_t> validated;
  for (const Split& f : folds) {
    CHECK(f.train.size() + f.validation.size() == 11);
    CHECK((f.validation.size() == 3 || f.validation.size() == 4));
    validated.insert(f.validation.begin(), f.validation.end());
  }
  CHECK(validated.size() == 11);
  CHECK(std::set<int64_t>(validated.begin(), validated.end()).size() == 11);  // each once
  CHECK_THROWS_AS(k_fold_splits(3, 4, 0), Error);
}

TEST_CASE("prepare: pad, resize, standardize; the inverse puts a mask back on its grid") {
  // A 150 x 90 slice with a lesion rectangle: padded to 150 x 150 (30 rows above).
  Volume image = picture(150, 90, 50, Intensity::Picture8Bit);
  Volume mask = picture(150, 90, 0, Intensity::Label);
  rect(image.voxels, 150, 40, 20, 100, 60, 200);
  rect(mask.voxels, 150, 40, 20, 100, 60, 1);
  const PreparedSlice p = prepare_slice(image, &mask, nullptr, 64);
  CHECK(p.placement.side == 150);
  CHECK(p.placement.pad_x == 0);
  CHECK(p.placement.pad_y == 30);
  REQUIRE(p.image.size() == 64 * 64);
  double mean = 0, squares = 0;
  for (float v : p.image) mean += v;
  mean /= 4096;
  for (float v : p.image) squares += (v - mean) * (v - mean);
  CHECK(mean == doctest::Approx(0).epsilon(1e-4));
  CHECK(std::sqrt(squares / 4096) == doctest::Approx(1).epsilon(1e-3));
  CHECK(std::all_of(p.mask.begin(), p.mask.end(), [](float v) { return v == 0.f || v == 1.f; }));
  // The lesion's row 40 of the square is row 40 * 64 / 150 = 17 of the input; its top is at (20+30)*64/150 = 21.3.
  CHECK(p.mask[22 * 64 + 30] == 1.f);
  CHECK(p.mask[19 * 64 + 30] == 0.f);

  const std::vector<float> back = to_original_grid(p.mask.data(), p.placement);
  REQUIRE(back.size() == mask.voxels.size());
  CHECK(dice(back, mask.voxels) > 0.95);  // 150 -> 64 -> 150 quantizes the edges

  // Lung masking zeroes what lies outside the lungs before standardizing.
  Volume lungs = picture(150, 90, 0, Intensity::Label);
  rect(lungs.voxels, 150, 30, 10, 120, 80, 1);
  const PreparedSlice masked = prepare_slice(image, &mask, &lungs, 64);
  const float outside = masked.image[0];
  CHECK(masked.image[5 * 64 + 5] == outside);  // padding and non-lung: one value
  CHECK(masked.image[28 * 64 + 32] > outside);

  // A real slice: its own mask survives the round trip at the network's size.
  const Dataset set = load_dataset(medseg("images"), medseg("masks"));
  const Sample& s = set.samples[3];
  const PreparedSlice real = prepare_sample(s, 256);
  CHECK(dice(to_original_grid(real.mask.data(), real.placement), s.mask.voxels) > 0.9);

  Volume wrong = picture(10, 10, 0, Intensity::Label);
  CHECK(error_of([&] { prepare_slice(image, &wrong, nullptr, 64); }).find("mask") != std::string::npos);
}

TEST_CASE("augment: image and mask move together") {
  constexpr int64_t n = 64;
  std::vector<float> image(n * n, 0.f), mask(n * n, 0.f), image_out(n * n), mask_out(n * n);
  rect(image, n, 20, 24, 36, 40, 1.f);
  rect(mask, n, 20, 24, 36, 40, 1.f);
  AugmentOptions options;
  options.rotation_degrees = 20;
  options.horizontal_flip = options.vertical_flip = true;
  std::mt19937_64 rng(5);
  int moved = 0;
  for (int trial = 0; trial < 20; ++trial) {
    const AffineTransform t = random_transform(options, n, rng);
    apply_transform(t, n, image.data(), image_out.data(), mask.data(), mask_out.data());
    CHECK(std::all_of(mask_out.begin(), mask_out.end(), [](float v) { return v == 0.f || v == 1.f; }));
    double cx_i = 0, cy_i = 0, cx_m = 0, cy_m = 0, wi = 0, wm = 0;
    for (int64_t y = 0; y < n; ++y)
      for (int64_t x = 0; x < n; ++x) {
        const float a = image_out[y * n + x], b = mask_out[y * n + x];
        cx_i += a * x, cy_i += a * y, wi += a;
        cx_m += b * x, cy_m += b * y, wm += b;
      }
    REQUIRE(wi > 0);
    REQUIRE(wm > 0);
    CHECK(std::abs(cx_i / wi - cx_m / wm) < 0.75);
    CHECK(std::abs(cy_i / wi - cy_m / wm) < 0.75);
    CHECK(dice(image_out, mask_out) > 0.93);
    if (std::abs(cx_m / wm - 27.5) > 2 || std::abs(cy_m / wm - 31.5) > 2) ++moved;
  }
  CHECK(moved >= 10);  // the transforms do move things

  // The identity leaves both untouched.
  apply_transform(AffineTransform{}, n, image.data(), image_out.data(), mask.data(), mask_out.data());
  CHECK(image_out == image);
  CHECK(mask_out == mask);
}

TEST_CASE("train: a width-0.25 network overfits four real slices") {
  const Dataset set = load_dataset(medseg("images"), medseg("masks"));
  // Four slices with clearly visible lesions (over 2% of the slice).
  std::vector<PreparedSlice> four;
  for (const Sample& s : set.samples) {
    double lesion = 0;
    for (float v : s.mask.voxels) lesion += v;
    if (lesion / static_cast<double>(s.mask.voxels.size()) > 0.02 && four.size() < 4)
      four.push_back(prepare_sample(s, 128));
  }
  REQUIRE(four.size() == 4);
  test::TempDir dir;
  TrainOptions o;
  o.model.width = 0.25;
  o.size = 128;
  o.batch = 4;
  o.epochs = 60;  // one step each: the whole run is ~15 s on 2 idle cores
  o.patience = 1000;
  o.augment = false;
  o.adam.lr = 3e-3;
  o.out_dir = dir.path();
  o.device = default_device();  // COVIDRATE_DEVICE=cuda runs it on the GPU
  const TrainResult r = train(four, {}, o);
  REQUIRE(r.epochs.size() == 60);
  CHECK(r.epochs.back().train_loss < 0.5 * r.epochs.front().train_loss);

  // The saved weights carry BN statistics recomputed on the slices (precise
  // BN), so evaluation mode agrees with the batch statistics the steps used.
  CovidRateNet net(o.model);
  net.parameters().load(dir.file("checkpoint/weights.safetensors"));
  const HybridLossParams loss = loss_params(o.loss, o.pos_weight);
  const Evaluation running = evaluate(net, four, 4, loss, /*batch_statistics=*/false);
  const Evaluation fitted = evaluate(net, four, 4, loss, /*batch_statistics=*/true);
  MESSAGE("after 60 steps: train loss ", r.epochs.back().train_loss, ", Dice ", running.mean_dice,
          " in evaluation mode, ", fitted.mean_dice, " with batch statistics");
  CHECK(running.mean_dice > 0.9);
  CHECK(fitted.mean_dice > 0.9);
}

TEST_CASE("train: resuming after a kill gives the bits of an uninterrupted run") {
  const Dataset set = load_dataset(medseg("images"), medseg("masks"));
  std::vector<PreparedSlice> train_set, validation;
  for (int i = 0; i < 6; ++i) train_set.push_back(prepare_sample(set.samples[static_cast<size_t>(i)], 32));
  for (int i = 6; i < 8; ++i) validation.push_back(prepare_sample(set.samples[static_cast<size_t>(i)], 32));
  TrainOptions o;
  o.model.width = 0.125;
  o.size = 32;
  o.batch = 4;  // 6 slices: a full batch and a partial one each epoch
  o.epochs = 3;
  o.seed = 11;
  o.model.seed = 11;
  o.adam.decay = 0.01;
  o.deterministic = true;
  o.device = default_device();

  test::TempDir whole, interrupted;
  o.out_dir = whole.path();
  // The uninterrupted run reports its progress, the other does not: the bits compared below must not care.
  std::vector<TrainProgress> reported;
  o.on_progress = [&](const TrainProgress& p) { reported.push_back(p); };
  const TrainResult a = train(train_set, validation, o);
  REQUIRE(a.epochs.size() == 3);
  o.on_progress = nullptr;
  // Per epoch: the steps (6 images, batches of 4 and 2), then precise BN (6) and validation (2) as one stage.
  std::vector<std::tuple<int, int, int64_t, int64_t>> expected;
  const std::vector<std::tuple<int, int64_t, int64_t>> epoch_reports = {{0, 0, 6}, {0, 4, 6}, {0, 6, 6}, {1, 0, 8},
                                                                        {1, 4, 8}, {1, 6, 8}, {1, 8, 8}};
  for (int e = 1; e <= 3; ++e)
    for (const auto& [stage, done, total] : epoch_reports) expected.emplace_back(e, stage, done, total);
  std::vector<std::tuple<int, int, int64_t, int64_t>> got;
  for (const TrainProgress& p : reported) got.emplace_back(p.epoch, static_cast<int>(p.stage), p.done, p.total);
  CHECK(got == expected);

  o.out_dir = interrupted.path();
  train(train_set, validation, o, [](const EpochRecord& r) { return r.epoch < 1; });  // "killed" after epoch 1
  // A kill between the checkpoint's two renames leaves only checkpoint.old/.
  fs::rename(interrupted.file("checkpoint"), interrupted.file("checkpoint.old"));
  CHECK_THROWS_AS(train(train_set, validation, o), Error);  // refuses to overwrite without --resume
  o.resume = true;
  const TrainResult b = train(train_set, validation, o);
  REQUIRE(b.epochs.size() == 3);

  CHECK(same_bits(safetensors::load(whole.file("checkpoint/weights.safetensors")),
                  safetensors::load(interrupted.file("checkpoint/weights.safetensors"))));
  CHECK(same_bits(safetensors::load(whole.file("checkpoint/adam.safetensors")),
                  safetensors::load(interrupted.file("checkpoint/adam.safetensors"))));
  CHECK(same_bits(safetensors::load(whole.file("best.safetensors")),
                  safetensors::load(interrupted.file("best.safetensors"))));
  for (int e = 0; e < 3; ++e) {  // epoch 1 of b comes back from the log, written to 9 digits
    CHECK(a.epochs[e].train_loss == doctest::Approx(b.epochs[e].train_loss).epsilon(1e-8));
    CHECK(a.epochs[e].val_loss == doctest::Approx(b.epochs[e].val_loss).epsilon(1e-8));
  }
  CHECK(a.epochs[2].train_loss == b.epochs[2].train_loss);
  CHECK(test::read_bytes(whole.file("log.jsonl")).size() > 0);
  CHECK(!fs::exists(interrupted.file("checkpoint.old")));
  // The picture of the run, redrawn after each epoch: the resumed run's holds the whole history.
  const std::vector<char> curves = test::read_bytes(interrupted.file("curves.svg"));
  CHECK(std::string(curves.begin(), curves.end()).find("Training: 3 epochs") != std::string::npos);

  // Another setting is refused on resume, naming it with both values.
  o.batch = 2;
  const std::string refused = error_of([&] { train(train_set, validation, o); });
  CHECK(refused.find("other settings") != std::string::npos);
  CHECK_MESSAGE(refused.find(": --batch was 4, now 2. Resume with the options of that run") != std::string::npos,
                refused);

  // A run started with --deterministic stays so: a resume without the flag, under another thread count
  // (here the checkpoint's, edited), is refused as one with it would be.
  o.batch = 4;
  o.epochs = 4;
  o.deterministic = false;
  const std::string state_path = interrupted.file("checkpoint/state.json");
  std::string state = test::read_text_file(state_path);
  REQUIRE(state.find("\"deterministic\": true") != std::string::npos);
  const size_t at = state.find("\"threads\": ") + 11;
  state.replace(at, state.find(',', at) - at, "97");
  test::write_bytes(state_path, std::vector<char>(state.begin(), state.end()));
  const std::string threads = error_of([&] { train(train_set, validation, o); });
  CHECK_MESSAGE(threads.find("with 97 CPU threads by a run started with --deterministic") != std::string::npos, threads);
}

TEST_CASE("train: --init starts from the given weights, not from the seeded draw") {
  const Dataset set = load_dataset(medseg("images"), medseg("masks"));
  std::vector<PreparedSlice> train_set{prepare_sample(set.samples[0], 32), prepare_sample(set.samples[1], 32)};
  test::TempDir dir, with_init, without_init;
  const std::string init = dir.file("init.safetensors");
  CovidRateNet(NetConfig{.width = 0.125, .cpb = true, .seed = 5}).parameters().save(init, {});
  TrainOptions o;
  o.model = {.width = 0.125, .cpb = true, .seed = 11};
  o.size = 32;
  o.batch = 2;
  o.epochs = 1;
  o.adam.lr = 1e-12;  // a step that moves nothing visibly
  o.augment = false;
  o.device = default_device();
  o.init_weights = init;
  o.out_dir = with_init.path();
  train(train_set, {}, o);
  o.init_weights.clear();
  o.out_dir = without_init.path();
  train(train_set, {}, o);

  const auto start = safetensors::load(init);
  const auto tuned = safetensors::load(with_init.file("best.safetensors"));
  const auto fresh = safetensors::load(without_init.file("best.safetensors"));
  int compared = 0;
  for (const auto& [name, t] : start) {
    if (name.find("running") != std::string::npos) continue;  // BN statistics are re-estimated each epoch
    REQUIRE(tuned.count(name));
    const std::vector<float> a = t.to_vector(), b = tuned.at(name).to_vector(), c = fresh.at(name).to_vector();
    double from_init = 0, from_fresh = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      from_init = std::max(from_init, double(std::abs(a[i] - b[i])));
      from_fresh = std::max(from_fresh, double(std::abs(a[i] - c[i])));
    }
    CHECK_MESSAGE(from_init < 1e-6, name);
    if (name.find("conv") != std::string::npos && name.find("weight") != std::string::npos)
      CHECK_MESSAGE(from_fresh > 1e-3, name);  // seed 11's draw is another network
    ++compared;
  }
  CHECK(compared > 50);

  o.init_weights = dir.file("missing.safetensors");
  o.out_dir = dir.file("run3");
  CHECK(error_of([&] { train(train_set, {}, o); }).find("missing.safetensors") != std::string::npos);
}

TEST_CASE("covidrate train --split, --synthetic and --pseudo: the named split, extra pairs on the training side only") {
  test::TempDir dir;
  const fs::path images = dir.file("images"), masks = dir.file("masks"), synthetic = dir.file("synthetic"),
                 pseudo = dir.file("pseudo");
  for (const fs::path& p : {images, masks, synthetic / "images", synthetic / "masks", pseudo / "images",
                            pseudo / "masks"})
    fs::create_directories(p);
  for (const char* n : {"0", "1", "2", "3", "4"}) {
    fs::copy_file(medseg("images") + "/" + n + ".jpg", images / (std::string(n) + ".jpg"));
    fs::copy_file(medseg("masks") + "/" + n + ".png", masks / (std::string(n) + ".png"));
  }
  for (const char* n : {"10", "11"}) {  // stand-ins for 'covidrate synth' output
    fs::copy_file(medseg("images") + "/" + n + ".jpg", synthetic / "images" / (std::string("s") + n + ".jpg"));
    fs::copy_file(medseg("masks") + "/" + n + ".png", synthetic / "masks" / (std::string("s") + n + ".png"));
  }
  // A stand-in for 'covidrate pseudo-label' output (pictures copied as they are, PNG masks).
  fs::copy_file(medseg("images") + "/12.jpg", pseudo / "images" / "u12.jpg");
  fs::copy_file(medseg("masks") + "/12.png", pseudo / "masks" / "u12.png");
  const std::string split = dir.file("split.json");
  std::ofstream(split) << "{\"train\": [\"0\", \"2\", \"3\"], \"validation\": [\"4\"]}\n";
  const std::string common = "train --images " + images.string() + " --masks " + masks.string() +
                             " --width 0.0625 --size 32 --epochs 1 --batch 2 ";
  const test::ProgramRun run = test::run_covidrate(
      dir, common + "--split " + split + " --synthetic " + synthetic.string() + " --pseudo " + pseudo.string() +
               " --out " + dir.file("run"));
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.out.find("2 synthetic slices") != std::string::npos);
  CHECK(run.out.find("1 pseudo-labelled slices") != std::string::npos);
  CHECK(run.out.find(" on 6 slices (3 synthetic or pseudo-labelled), validating on 1") != std::string::npos);
  // Pairs of unknown origin are used, with a warning.
  CHECK(run.err.find("synthetic has no sources.json") != std::string::npos);
  // With their origins: s10 holds the lesions of the validation slice 4 and is left out.
  std::ofstream(synthetic / "sources.json")
      << "{\"s10\": {\"lesions_from\": \"4\"}, \"s11\": {\"lesions_from\": \"2\"}}\n";
  const test::ProgramRun sourced = test::run_covidrate(
      dir, common + "--split " + split + " --synthetic " + synthetic.string() + " --out " + dir.file("run-sourced"));
  REQUIRE_MESSAGE(sourced.exit_code == 0, sourced.err);
  CHECK(sourced.err.find("sources.json") == std::string::npos);
  CHECK_MESSAGE(sourced.out.find("left out 1 synthetic pair whose lesions come from the validation slices\n") !=
                    std::string::npos, sourced.out);
  CHECK(sourced.out.find(" on 4 slices (1 synthetic or pseudo-labelled), validating on 1") != std::string::npos);
  // Every pair must be accounted for.
  std::ofstream(synthetic / "sources.json") << "{\"s11\": {\"lesions_from\": \"2\"}}\n";
  const test::ProgramRun unaccounted = test::run_covidrate(
      dir, common + "--split " + split + " --synthetic " + synthetic.string() + " --out " + dir.file("run-bad"));
  CHECK(unaccounted.exit_code == 1);
  CHECK_MESSAGE(unaccounted.err.find("sources.json does not say where pair 's10' comes from") != std::string::npos,
                unaccounted.err);
  CHECK_FALSE(fs::exists(dir.file("run-bad")));
  const std::string written = test::read_text_file(dir.file("run/split.json"));
  CHECK(written.find("\"train\": [\"0\", \"2\", \"3\"]") != std::string::npos);
  CHECK(written.find("\"validation\": [\"4\"]") != std::string::npos);

  // A split naming a slice that is not there, or one on both sides: the file and the name in the error.
  std::ofstream(split) << "{\"train\": [\"0\", \"9\"], \"validation\": [\"4\"]}\n";
  test::ProgramRun bad = test::run_covidrate(dir, common + "--split " + split + " --out " + dir.file("bad1"));
  CHECK(bad.exit_code != 0);
  CHECK(bad.err.find("split.json names slice '9'") != std::string::npos);
  std::ofstream(split) << "{\"train\": [\"0\", \"4\"], \"validation\": [\"4\"]}\n";
  bad = test::run_covidrate(dir, common + "--split " + split + " --out " + dir.file("bad2"));
  CHECK(bad.exit_code != 0);
  CHECK(bad.err.find("'4' twice") != std::string::npos);
  bad = test::run_covidrate(dir, common + "--split " + split + " --folds 2 --out " + dir.file("bad3"));
  CHECK(bad.exit_code == 2);
}

// Five MedSeg slices copied into dir (images/, masks/) and the start of a
// `covidrate train` command line over them with a tiny network, one epoch.
std::string five_slice_train_args(const test::TempDir& dir) {
  const fs::path images = dir.file("images"), masks = dir.file("masks");
  fs::create_directories(images);
  fs::create_directories(masks);
  for (const char* n : {"0", "1", "2", "3", "4"}) {
    fs::copy_file(medseg("images") + "/" + n + ".jpg", images / (std::string(n) + ".jpg"));
    fs::copy_file(medseg("masks") + "/" + n + ".png", masks / (std::string(n) + ".png"));
  }
  return "train --images " + images.string() + " --masks " + masks.string() +
         " --width 0.0625 --size 32 --epochs 1 --batch 2 ";
}

TEST_CASE("covidrate train: a folder holding a run is refused without --resume; a failed start writes nothing") {
  test::TempDir dir;
  const std::string common = five_slice_train_args(dir);
  const std::string run_dir = dir.file("run");
  const test::ProgramRun first = test::run_covidrate(dir, common + "--out " + run_dir);
  REQUIRE_MESSAGE(first.exit_code == 0, first.err);
  // Progress within the epoch on stderr. Not a terminal here, so as Progress does in a log: a line per
  // quarter of the epoch's images (batches of 2 of 4: at 2 and 4), with the rate and the time left.
  INFO("stderr of the first run:\n" << first.err);
  CHECK(first.err.find("epoch 1/1: 2/4 images, ") != std::string::npos);
  CHECK(first.err.find("epoch 1/1: 4/4 images, ") != std::string::npos);
  CHECK(first.err.find(" images/s, ETA ") != std::string::npos);
  CHECK(first.err.find("validating") == std::string::npos);  // a terminal's transient line only
  const std::map<std::string, std::string> before = folder_contents(run_dir);
  for (const char* name : {"log.jsonl", "best.safetensors", "split.json", "checkpoint/state.json"})
    REQUIRE_MESSAGE(before.count(name), name);

  // Again without --resume (another seed: another split.json, were it written): refused before anything is written.
  REQUIRE(train_validation_split(5, 0.2, 0).validation != train_validation_split(5, 0.2, 3).validation);
  test::ProgramRun run = test::run_covidrate(dir, common + "--seed 3 --out " + run_dir);
  CHECK(run.exit_code == 1);
  CHECK(run.err.find(run_dir + " already holds log.jsonl from an earlier run; pass --resume to continue that run "
                               "or choose another --out") != std::string::npos);
  CHECK(folder_contents(run_dir) == before);
  // Nor with --folds (which writes fold-K/ inside it).
  run = test::run_covidrate(dir, common + "--folds 2 --out " + run_dir);
  CHECK(run.exit_code == 1);
  CHECK(folder_contents(run_dir) == before);
  // A folder of something else: named, refused, untouched.
  const std::string other = dir.file("segmented");
  fs::create_directories(other);
  std::ofstream(other + "/report.json") << "{}\n";
  run = test::run_covidrate(dir, common + "--out " + other);
  CHECK(run.exit_code == 1);
  CHECK(run.err.find(other + " already holds report.json; choose another --out") != std::string::npos);
  CHECK(folder_contents(other) == std::map<std::string, std::string>{{"report.json", "{}\n"}});

  // Failed starts: --out is not created, or left as it was.
  std::ofstream(dir.file("no-validation.json")) << "{\"train\": [\"0\", \"1\"], \"validation\": []}\n";
  fs::create_directories(dir.file("one/images"));
  fs::create_directories(dir.file("one/masks"));
  fs::copy_file(dir.file("images/0.jpg"), dir.file("one/images/0.jpg"));
  fs::copy_file(dir.file("masks/0.png"), dir.file("one/masks/0.png"));
  const std::string fresh = dir.file("fresh");
  const struct {
    std::string arguments, message;
  } failed_starts[] = {
      {common + "--resume --out " + fresh, fresh + " holds no checkpoint to continue"},
      {common + "--resume --folds 2 --out " + fresh, fresh + " holds no fold-1/ of an earlier cross-validation"},
      {common + "--init " + dir.file("missing.safetensors") + " --out " + fresh, "missing.safetensors"},
      // COVID-Rate's weights for a U-Net.
      {common + "--arch unet --init " + run_dir + "/best.safetensors --out " + fresh, "do not match the model"},
      {common + "--split " + dir.file("no-validation.json") + " --out " + fresh, "names no validation slice"},
      {"train --images " + dir.file("one/images") + " --masks " + dir.file("one/masks") + " --size 32 --out " + fresh,
       "none is left to validate on"},
  };
  for (const auto& c : failed_starts) {
    CAPTURE(c.arguments);
    run = test::run_covidrate(dir, c.arguments);
    CHECK(run.exit_code == 1);
    CHECK_MESSAGE(run.err.find(c.message) != std::string::npos, run.err);
    CHECK(!fs::exists(fresh));
  }
  // An empty folder is taken as a new one; with --resume it holds nothing to resume and stays empty.
  fs::create_directories(fresh);
  run = test::run_covidrate(dir, common + "--resume --out " + fresh);
  CHECK(run.exit_code == 1);
  CHECK(fs::is_empty(fresh));
  // A resume with other settings is refused before split.json is rewritten, naming the options that differ
  // with their values as given (not the fingerprint's 17 digits, nor its checksum of the data).
  run = test::run_covidrate(dir, common + "--seed 3 --resume --out " + run_dir);
  CHECK(run.exit_code == 1);
  CHECK_MESSAGE(run.err.find("was made with other settings or data: --seed was 0, now 3. Resume with the options of "
                             "that run, or choose another --out to start afresh") != std::string::npos,
                run.err);
  CHECK(folder_contents(run_dir) == before);
  run = test::run_covidrate(dir, common + "--width 0.05 --seed 1 --resume --out " + run_dir);
  CHECK(run.exit_code == 1);
  CHECK_MESSAGE(run.err.find(": --width was 0.0625, now 0.05; --seed was 0, now 1. ") != std::string::npos, run.err);
  CHECK(folder_contents(run_dir) == before);
  run = test::run_covidrate(dir, common + "--resume --folds 2 --out " + run_dir);
  CHECK(run.exit_code == 1);
  CHECK(run.err.find("it holds a single run: resume it without --folds") != std::string::npos);
  CHECK(folder_contents(run_dir) == before);
  // The same slices split otherwise (one validation slice either way): refused, or the run would train on
  // the slice it validated on.
  {
    const std::string split = before.at("split.json");
    const size_t at = split.find("\"validation\": [\"");
    REQUIRE(at != std::string::npos);
    const std::string validated = split.substr(at + 15, 1);
    const std::string moved_slice = validated == "0" ? "1" : "0", moved = dir.file("moved.json");
    std::string train_names;
    for (const char* n : {"0", "1", "2", "3", "4"})
      if (n != moved_slice) train_names += std::string(train_names.empty() ? "" : ", ") + "\"" + n + "\"";
    std::ofstream(moved) << "{\"train\": [" << train_names << "], \"validation\": [\"" << moved_slice << "\"]}\n";
    run = test::run_covidrate(dir, common + "--split " + moved + " --resume --out " + run_dir);
    CHECK(run.exit_code == 1);
    CHECK_MESSAGE(run.err.find(": the same slices are split otherwise (another --split, --folds or --val-fraction)") !=
                      std::string::npos, run.err);
    CHECK(folder_contents(run_dir) == before);
  }

  // A checkpoint written before the fingerprint had its last field (validation_data) is held to the
  // fields it has: here, as an older covidrate wrote it.
  {
    const std::string state_path = run_dir + "/checkpoint/state.json";
    std::string state = test::read_text_file(state_path);
    const size_t at = state.find(" validation_data ");
    REQUIRE(at != std::string::npos);
    state.erase(at, state.find('"', at) - at);
    test::write_bytes(state_path, std::vector<char>(state.begin(), state.end()));
  }
  // --resume continues as before: one more epoch appended to the same log.
  run = test::run_covidrate(dir, common + "--epochs 2 --resume --out " + run_dir);
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  const std::string log = test::read_text_file(run_dir + "/log.jsonl");
  CHECK(log.rfind(before.at("log.jsonl"), 0) == 0);
  CHECK(log.find("{\"epoch\": 2,") != std::string::npos);

  // Cross-validation: into an empty folder; a second time only with --resume.
  const std::string cv = dir.file("cv");
  fs::create_directories(cv);
  run = test::run_covidrate(dir, common + "--folds 2 --out " + cv);
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.err.find("fold 2/2, epoch 1/1: ") != std::string::npos);
  const std::map<std::string, std::string> folds = folder_contents(cv);
  CHECK(folds.count("folds.json"));
  run = test::run_covidrate(dir, common + "--folds 2 --out " + cv);
  CHECK(run.exit_code == 1);
  CHECK(run.err.find(cv + " already holds folds.json from an earlier run") != std::string::npos);
  CHECK(folder_contents(cv) == folds);
  run = test::run_covidrate(dir, common + "--folds 2 --resume --out " + cv);
  CHECK_MESSAGE(run.exit_code == 0, run.err);
}

TEST_CASE("covidrate train: a run stopped before its first checkpoint is started afresh, with or without --resume") {
  test::TempDir dir;
  const std::string common = five_slice_train_args(dir);
  // What the trainer leaves when stopped in epoch 1: split.json and an empty log.jsonl
  // (best weights, the log's first line and the checkpoint come as the epoch ends).
  const auto interrupted = [&](const fs::path& folder, const std::string& log) {
    fs::create_directories(folder);
    std::ofstream(folder / "split.json") << "{\"train\": [\"0\", \"1\", \"2\", \"3\"],\n \"validation\": [\"4\"]}\n";
    std::ofstream(folder / "log.jsonl") << log;
  };
  for (const char* resume : {"", "--resume "}) {
    CAPTURE(resume);
    const std::string out = dir.file(*resume ? "resumed" : "rerun");
    interrupted(out, "");
    const test::ProgramRun run = test::run_covidrate(dir, common + resume + "--out " + out);
    REQUIRE_MESSAGE(run.exit_code == 0, run.err);
    CHECK(run.err.find(out + ": an earlier run stopped before its first checkpoint; starting afresh\n") !=
          std::string::npos);
    CHECK(fs::exists(out + "/checkpoint/state.json"));
    CHECK(test::read_text_file(out + "/log.jsonl").find("{\"epoch\": 1,") == 0);
  }
  // Cross-validation: a folder holding only such a fold-1/.
  const std::string cv = dir.file("cv");
  interrupted(cv + "/fold-1", "");
  test::ProgramRun run = test::run_covidrate(dir, common + "--folds 2 --out " + cv);
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.err.find(cv + "/fold-1: an earlier run stopped before its first checkpoint; starting afresh\n") !=
        std::string::npos);
  CHECK(fs::exists(cv + "/folds.json"));

  // Killed (or out of disk) as epoch 1 ended, after its log line and best weights, while the first
  // checkpoint was written (checkpoint.tmp/, a writer's temporary): still nothing to resume.
  const std::string ending = dir.file("ending");
  interrupted(ending, "{\"epoch\": 1, \"train_loss\": 1}\n");
  std::ofstream(ending + "/best.safetensors") << "weights";
  fs::create_directories(ending + "/checkpoint.tmp");
  std::ofstream(ending + "/checkpoint.tmp/weights.safetensors") << "half";
  std::ofstream(ending + "/curves.svg.tmp-999999999-0") << "";  // its writer long gone
  for (const char* resume : {"--resume ", ""}) {
    CAPTURE(resume);
    run = test::run_covidrate(dir, common + resume + "--out " + ending);
    REQUIRE_MESSAGE(run.exit_code == 0, run.err);
    CHECK(run.err.find(ending + ": an earlier run stopped before its first checkpoint; starting afresh\n") !=
          std::string::npos);
    CHECK(fs::exists(ending + "/checkpoint/state.json"));
    CHECK_FALSE(fs::exists(ending + "/curves.svg.tmp-999999999-0"));  // the dead writer's temporary removed
    if (*resume) fs::remove_all(ending + "/checkpoint"), std::ofstream(ending + "/log.jsonl") << "{\"epoch\": 1}\n";
  }

  // Anything more is not an interrupted start: refused as before, untouched, no such line. A log of
  // two epochs without a checkpoint is a finished run whose checkpoint went, not a start cut short.
  const std::string other = dir.file("other"), finished = dir.file("finished");
  interrupted(other, "");
  interrupted(finished, "{\"epoch\": 1, \"train_loss\": 1}\n{\"epoch\": 2, \"train_loss\": 0.9}\n");
  std::ofstream(finished + "/best.safetensors") << "weights";
  std::ofstream(other + "/notes.txt") << "mine\n";
  const struct {
    std::string folder, arguments, message;
  } refused[] = {
      {finished, "", " already holds log.jsonl from an earlier run"},
      {finished, "--resume ", " holds no checkpoint to continue"},
      {other, "", " already holds log.jsonl from an earlier run"},
      {other, "--resume ", " holds no checkpoint to continue"},
      // A single run's folder is not a cross-validation's, nor the other way round.
      {dir.file("single"), "--folds 2 ", " already holds log.jsonl from an earlier run"},
      {cv + "-only", "", " already holds fold-1 from an earlier run"},
  };
  interrupted(dir.file("single"), "");
  interrupted(cv + "-only/fold-1", "");
  for (const auto& c : refused) {
    CAPTURE(c.folder);
    CAPTURE(c.arguments);
    const std::map<std::string, std::string> before = folder_contents(c.folder);
    run = test::run_covidrate(dir, common + c.arguments + "--out " + c.folder);
    CHECK(run.exit_code == 1);
    CHECK_MESSAGE(run.err.find(c.folder + c.message) != std::string::npos, run.err);
    CHECK(run.err.find("starting afresh") == std::string::npos);
    CHECK(folder_contents(c.folder) == before);
  }
}

TEST_CASE("covidrate train --lungs: recorded in the weights; eval feeds the lungs alone, segment refuses them") {
  test::TempDir dir;
  const std::string common = five_slice_train_args(dir);
  const test::ProgramRun trained = test::run_covidrate(dir, common + "--lungs --out " + dir.file("run"));
  REQUIRE_MESSAGE(trained.exit_code == 0, trained.err);
  const std::string weights = dir.file("run/best.safetensors");
  CHECK(safetensors::load_metadata(weights).at("lungs") == "1");
  const test::ProgramRun eval = test::run_covidrate(
      dir, "eval --weights " + weights + " --images " + dir.file("images") + " --masks " + dir.file("masks"));
  CHECK_MESSAGE(eval.exit_code == 0, eval.err);
  CHECK(eval.err.find("was trained on the lungs alone (train --lungs): so are its inputs here") != std::string::npos);
  const test::ProgramRun segment = test::run_covidrate(
      dir, "segment " + dir.file("images/0.jpg") + " --out " + dir.file("seg") + " --weights " + weights);
  CHECK(segment.exit_code == 1);
  CHECK(segment.err.find("was trained on the lungs alone") != std::string::npos);
  CHECK_FALSE(fs::exists(dir.file("seg")));
  // Without --lungs nothing is recorded.
  const test::ProgramRun plain = test::run_covidrate(dir, common + "--out " + dir.file("plain"));
  REQUIRE_MESSAGE(plain.exit_code == 0, plain.err);
  CHECK(safetensors::load_metadata(dir.file("plain/best.safetensors")).count("lungs") == 0);
}

TEST_CASE("covidrate train stopped by a signal says how to go on, and --resume does") {
  test::TempDir dir;
  const std::string common = five_slice_train_args(dir);
  const std::string out = dir.file("run");
  // Many epochs; stopped with SIGINT as soon as the first one's checkpoint is
  // there (the log's line comes just before it: a stop between the two leaves
  // nothing to resume yet).
  const std::string script = "cd " + dir.path() + " && (" + test::covidrate_program() + " " + common +
                             "--epochs 1000 --patience 1000 --out " + out + " >/dev/null 2>" + dir.file("err") +
                             " & pid=$!; while [ ! -d " + out + "/checkpoint ] && kill -0 $pid 2>/dev/null; do sleep 0.05; done; " +
                             "kill -INT $pid; " +
                             "wait $pid; echo $? >" + dir.file("status") + ")";
  REQUIRE(std::system(script.c_str()) == 0);
  CHECK(test::read_text_file(dir.file("status")) == "130\n");  // the signal's own status
  CHECK(test::read_text_file(dir.file("err")).find("train: stopped; " + out + " keeps the last finished epoch") !=
        std::string::npos);
  const test::ProgramRun resumed =
      test::run_covidrate(dir, common + "--epochs 2 --patience 1000 --resume --out " + out);
  CHECK_MESSAGE(resumed.exit_code == 0, resumed.err);
}
