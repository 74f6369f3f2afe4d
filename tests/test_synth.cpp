// Synthetic lesion insertion: the box alignment and the rules on small drawn
// slices, then pairs built from the real MedSeg training slices and the healthy
// TCGA series; `covidrate synth` refuses an --out it cannot write before the work.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <tuple>

#include "data/image2d.h"
#include "data/synth.h"
#include "data/synth_set.h"
#include "nn/error.h"
#include "tests/support/run_covidrate.h"
#include "tests/support/test_support.h"
#include "tests/temp_files.h"

using namespace covidrate;
using namespace covidrate::data;

namespace {

Volume slice(int64_t nx, int64_t ny, float fill) {
  Volume v;
  v.nx = nx, v.ny = ny, v.nz = 1;
  v.voxels.assign(nx * ny, fill);
  return v;
}

void rect(Volume& v, int64_t x0, int64_t y0, int64_t x1, int64_t y1, float value) {
  for (int64_t y = y0; y < y1; ++y)
    for (int64_t x = x0; x < x1; ++x) v.voxels[y * v.nx + x] = value;
}

// An infected 20x20 slice: lungs fill [4,16)^2, a lesion (grey 200) in the
// lungs' top-left quarter [4,10)^2.
AnnotatedSlice infected_slice(const std::string& name = "infected") {
  AnnotatedSlice s{slice(20, 20, 60), slice(20, 20, 0), slice(20, 20, 0), name};
  rect(s.lungs, 4, 4, 16, 16, 1);
  rect(s.lesion, 4, 4, 10, 10, 1);
  rect(s.image, 4, 4, 10, 10, 200);
  return s;
}

// A healthy 40x30 slice whose lungs fill [10,34) x [6,24): another size and place.
AnnotatedSlice healthy_slice() {
  AnnotatedSlice s{slice(40, 30, 220), slice(40, 30, 0), Volume{}, "healthy"};
  rect(s.lungs, 10, 6, 34, 24, 1);
  rect(s.image, 10, 6, 34, 24, 50);
  return s;
}

}  // namespace

TEST_CASE("insert_lesions maps the infected lung box onto the healthy lung box") {
  const auto pair = insert_lesions(infected_slice(), healthy_slice());
  REQUIRE(pair.has_value());
  // The lesion covered the top-left quarter of the infected lungs, so it covers
  // the top-left quarter of the healthy lungs: [10,22) x [6,15).
  for (int64_t y = 0; y < 30; ++y)
    for (int64_t x = 0; x < 40; ++x) {
      const bool in_quarter = x >= 10 && x < 22 && y >= 6 && y < 15;
      CAPTURE(x);
      CAPTURE(y);
      CHECK((pair->mask.voxels[y * 40 + x] == 1) == in_quarter);
      const float expected = in_quarter ? 200.f : healthy_slice().image.voxels[y * 40 + x];
      // Bilinear sampling blends the lesion's edge with the lung around it.
      if (!in_quarter || (x > 10 && x < 21 && y > 6 && y < 14)) CHECK(pair->image.voxels[y * 40 + x] == doctest::Approx(expected));
    }
  CHECK(pair->infection_rate == doctest::Approx(12.0 * 9.0 / (24.0 * 18.0)));
}

TEST_CASE("insert_lesions trims lesions outside the healthy lung and drops tiny infections") {
  AnnotatedSlice healthy = healthy_slice();
  // Remove the healthy lung's top-left corner (its box stays the same): the
  // lesion is trimmed there.
  rect(healthy.lungs, 10, 6, 16, 10, 0);
  const auto pair = insert_lesions(infected_slice(), healthy);
  REQUIRE(pair.has_value());
  for (int64_t p = 0; p < 40 * 30; ++p)
    if (pair->mask.voxels[p] != 0) CHECK(healthy.lungs.voxels[p] != 0);
  // A one-pixel lesion covers two or three healthy pixels of 432: no pair.
  AnnotatedSlice speck = infected_slice();
  rect(speck.lesion, 0, 0, 20, 20, 0);
  rect(speck.lesion, 8, 8, 9, 9, 1);
  CHECK_FALSE(insert_lesions(speck, healthy_slice()).has_value());
  // Masks that do not match their image are refused.
  AnnotatedSlice bad = infected_slice();
  bad.lesion = slice(19, 20, 0);
  CHECK_THROWS_AS(insert_lesions(bad, healthy_slice()), Error);
}

TEST_CASE("write_synthetic_set writes ratio x N pairs atomically in the MedSeg layout") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("covidrate_synth_test_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const std::vector<AnnotatedSlice> infected{infected_slice("a"), infected_slice("b"), infected_slice("c")},
      healthy(2, healthy_slice());
  int64_t calls = 0;
  const SynthSetReport r =
      write_synthetic_set(infected, healthy, 2.0, 5, dir.string(), [&](int64_t, int64_t) { ++calls; }, 0.10);
  CHECK(r.wanted == 6);
  CHECK(r.written == 6);
  CHECK(calls == 6);
  CHECK(r.mean_infection_rate == doctest::Approx(12.0 * 9.0 / (24.0 * 18.0)));
  CHECK_FALSE(fs::exists(dir.string() + ".tmp"));
  CHECK(fs::exists(dir / "overview.png"));
  // The healthy lung box [10,34) x [6,24) grows by 10 % (2 and 1 pixels) and is transposed.
  const Volume image = read_image((dir / "images" / "synth_00005.png").string());
  const Volume mask = read_image((dir / "masks" / "synth_00005.png").string());
  CHECK(image.nx == 20);
  CHECK(image.ny == 28);
  CHECK(mask.intensity == Intensity::Label);
  int64_t lesion = 0;
  for (float v : mask.voxels) lesion += v == 1;
  CHECK(lesion == 12 * 9);
  // Where each pair's lesions come from (train leaves out those of validation slices):
  // the infected slices in turn.
  const auto sources = read_synthetic_sources(dir.string());
  REQUIRE(sources.has_value());
  CHECK(sources->size() == 6);
  CHECK(sources->at("synth_00000") == "a");
  CHECK(sources->at("synth_00004") == "b");
  CHECK(sources->at("synth_00005") == "c");
  CHECK_THROWS_AS(write_synthetic_set(infected, healthy, 1.0, 5, dir.string()), Error);
  fs::remove_all(dir);
  // A ratio that rounds to no pair is an error, not an empty set.
  CHECK_THROWS_WITH_AS(write_synthetic_set(infected, healthy, 0.1, 5, dir.string()),
                       "synth: a ratio of 0.1 with 3 infected slices makes no pair", Error);
  CHECK_FALSE(fs::exists(dir));
}

TEST_CASE("write_synthetic_set's margin sets how far around the healthy lungs a pair is cut") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("covidrate_synth_margin_" + std::to_string(::getpid()));
  const std::vector<AnnotatedSlice> infected(1, infected_slice()), healthy(1, healthy_slice());
  // (margin, picture width, picture height): the lung box [10,34) x [6,24) is 24 x 18,
  // widened by floor(margin x 24) and floor(margin x 18) on each side, then transposed.
  for (const auto& [margin, nx, ny] : {std::tuple{0.0, 18, 24}, std::tuple{0.02, 18, 24},
                                       std::tuple{0.25, 26, 36}}) {
    CAPTURE(margin);
    fs::remove_all(dir);
    write_synthetic_set(infected, healthy, 1.0, 5, dir.string(), nullptr, margin);
    const Volume image = read_image((dir / "images" / "synth_00000.png").string());
    CHECK(image.nx == nx);
    CHECK(image.ny == ny);
  }
  // The default is segment's cut, 0.02.
  fs::remove_all(dir);
  write_synthetic_set(infected, healthy, 1.0, 5, dir.string());
  CHECK(read_image((dir / "images" / "synth_00000.png").string()).nx == 18);
  fs::remove_all(dir);
  CHECK_THROWS_AS(write_synthetic_set(infected, healthy, 1.0, 5, dir.string(), nullptr, -0.1), Error);
  CHECK_THROWS_AS(write_synthetic_set(infected, healthy, 1.0, 5, dir.string(), nullptr, 1.5), Error);
  CHECK_FALSE(fs::exists(dir));
}

TEST_CASE("synthetic pairs from MedSeg lesions and healthy TCGA lungs") {
  namespace fs = std::filesystem;
  const fs::path data = test::data_dir();
  const auto infected = load_infected_slices((data / "medseg-semiseg" / "train").string(), 12);
  const auto healthy = load_healthy_slices((data / "ct-healthy-tcga").string());
  REQUIRE(infected.size() == 12);
  REQUIRE(healthy.size() >= 10);
  std::mt19937 rng(7);
  int made = 0;
  for (const AnnotatedSlice& source : infected) {
    const AnnotatedSlice& target = healthy[rng() % healthy.size()];
    const auto pair = insert_lesions(source, target);
    if (!pair) continue;
    ++made;
    int64_t lesion = 0, lung = 0, changed_outside = 0;
    for (int64_t p = 0; p < target.image.voxel_count(); ++p) {
      const bool in_lung = target.lungs.voxels[p] != 0, in_mask = pair->mask.voxels[p] != 0;
      lung += in_lung;
      lesion += in_mask;
      CHECK((!in_mask || in_lung));  // the mask stays inside the healthy lung
      changed_outside += !in_mask && pair->image.voxels[p] != target.image.voxels[p];
    }
    CHECK(changed_outside == 0);  // only masked pixels change
    CHECK(double(lesion) / double(lung) > 0.01);
    CHECK(pair->infection_rate == doctest::Approx(double(lesion) / double(lung)));
  }
  MESSAGE(made << " of 12 random pairings kept (the rest had infection rate <= 0.01)");
  CHECK(made >= 8);
}

TEST_CASE("read_synthetic_sources: none for a folder without sources.json, an error naming a malformed one") {
  test::TempDir dir;
  CHECK_FALSE(read_synthetic_sources(dir.path()).has_value());
  for (const char* bad : {"[1]", "{\"synth_00000\": {\"healthy\": \"slice 3\"}}", "{\"synth_00000\": "}) {
    std::ofstream(dir.file("sources.json")) << bad;
    std::string message;
    try {
      read_synthetic_sources(dir.path());
    } catch (const Error& e) {
      message = e.what();
    }
    CHECK_MESSAGE(message.find(dir.file("sources.json")) == 0, bad, ": ", message);
  }
}

TEST_CASE("load_infected_slices keeps only the slices a split names, and each must exist") {
  const std::string train = test::data_dir() + "/medseg-semiseg/train";
  const auto picked = load_infected_slices(train, 0, {"12", "3"});
  REQUIRE(picked.size() == 2);
  // In file-name order, as without a list: "12" sorts before "3".
  const auto three = load_infected_slices(train, 0, {"12", "3", "0"});
  REQUIRE(three.size() == 3);
  CHECK(three[0].name == "0");
  CHECK(three[1].name == "12");
  CHECK(three[1].image.voxels == picked[0].image.voxels);
  CHECK(three[2].image.voxels == picked[1].image.voxels);
  bool named = false;
  try {
    load_infected_slices(train, 0, {"3", "no-such-slice"});
  } catch (const Error& e) {
    named = std::string(e.what()).find("'no-such-slice'") != std::string::npos;
  }
  CHECK(named);
}

TEST_CASE("covidrate synth refuses an --out under a file before reading anything") {
  test::TempDir dir;
  const std::string file = dir.file("some.png");
  test::write_bytes(file, {'x'});
  const std::string data = test::data_dir();
  const test::ProgramRun run =
      test::run_covidrate(dir, "synth --ratio 1 --out " + file + "/sub --train " + data + "/medseg-semiseg/train" +
                                   " --healthy " + data + "/ct-healthy-tcga");
  CHECK(run.exit_code == 1);
  CHECK(run.err.find(file + " is a file, not a folder") != std::string::npos);
  CHECK(run.err.find("synth: reading") == std::string::npos);  // refused before the reading
  CHECK(test::read_bytes(file) == std::vector<char>{'x'});
}

TEST_CASE("covidrate synth: a split that lists no training slice is refused, not read as 'every slice'") {
  test::TempDir dir;
  const std::string split = dir.file("split.json");
  std::ofstream(split) << "{\"train\": [], \"validation\": [\"0\"]}\n";
  const std::string data = test::data_dir();
  const test::ProgramRun run =
      test::run_covidrate(dir, "synth --ratio 1 --out " + dir.file("out") + " --split " + split + " --train " + data +
                                   "/medseg-semiseg/train --healthy " + data + "/ct-healthy-tcga");
  CHECK(run.exit_code == 1);
  CHECK_MESSAGE(run.err.find(split + " lists no slice under \"train\"") != std::string::npos, run.err);
  CHECK_FALSE(std::filesystem::exists(dir.file("out")));
}
