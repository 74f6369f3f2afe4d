// `covidrate eval` end to end on three real MedSeg slices: a tiny network with
// freshly initialized weights (no training: the scores mean nothing, the report
// must still be complete and well-formed), the JSON report, the saved masks at
// each image's own size, and the command's errors and exit codes.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "data/dataset.h"
#include "data/image2d.h"
#include "model/covidrate_net.h"
#include "model/metrics.h"
#include "nn/json.h"
#include "support/test_support.h"
#include "support/run_covidrate.h"
#include "temp_files.h"

using namespace covidrate;
namespace fs = std::filesystem;

namespace {

const char* const kStems[] = {"0", "1", "10"};

test::ProgramRun run_eval(const test::TempDir& dir, const std::string& args) {
  return test::run_covidrate(dir, "eval " + args);
}

// Three slices of the MedSeg training set in images/ and masks/ of `dir`, and
// the weights of a width-1/16 network saved as train saves them (with the
// architecture in the metadata).
void set_up(const test::TempDir& dir) {
  const fs::path medseg = fs::path(test::data_dir()) / "medseg-semiseg" / "train";
  fs::create_directories(dir.file("images"));
  fs::create_directories(dir.file("masks"));
  for (const char* stem : kStems) {
    fs::copy_file(medseg / "images" / (std::string(stem) + ".jpg"), fs::path(dir.file("images")) / (std::string(stem) + ".jpg"));
    fs::copy_file(medseg / "masks" / (std::string(stem) + ".png"), fs::path(dir.file("masks")) / (std::string(stem) + ".png"));
  }
  CovidRateNet net(NetConfig{.width = 0.0625, .cpb = true, .seed = 3});
  net.parameters().save(dir.file("weights.safetensors"), {{"width", "0.0625"}, {"cpb", "1"}, {"size", "64"}});
}

std::string data_args(const test::TempDir& dir) {
  return "--weights " + dir.file("weights.safetensors") + " --images " + dir.file("images") + " --masks " +
         dir.file("masks");
}

void check_distribution(const json::Value& d) {
  for (const char* stat : {"mean", "std", "median", "q1", "q3"}) {
    const json::Value* v = d.find(stat);
    REQUIRE_MESSAGE(v, "missing " << stat);
    if (v->kind == json::Value::Kind::Null) continue;  // an empty group
    REQUIRE(v->kind == json::Value::Kind::Number);
    const double x = std::stod(v->text);
    CHECK(x >= 0.0);
    CHECK(x <= 1.0);
  }
}

}  // namespace

TEST_CASE("eval writes a complete report and one mask per image at its own size") {
  test::TempDir dir;
  set_up(dir);
  const test::ProgramRun run = run_eval(dir, data_args(dir) + " --json " + dir.file("report.json") + " --save-masks " +
                                    dir.file("predicted") + " --overview " + dir.file("overview.png"));
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.err.find("slices/s, ETA") != std::string::npos);  // progress with its rate and time left
  for (const char* word : {"dice", "sensitivity", "specificity", "mae", "A (small)", "B (large)"})
    CHECK_MESSAGE(run.out.find(word) != std::string::npos, word << " missing from the table:\n" << run.out);

  std::ifstream in(dir.file("report.json"));
  std::stringstream text;
  text << in.rdbuf();
  const json::Value report = json::parse(text.str());
  int64_t grouped = 0;
  for (const char* group : {"overall", "group_a", "group_b"}) {
    const json::Value* g = report.find(group);
    REQUIRE_MESSAGE(g, "missing " << group);
    REQUIRE(g->find("images"));
    if (std::string(group) != "overall") grouped += std::stoll(g->find("images")->text);
    for (const char* metric : {"dice", "sensitivity", "specificity", "mae"}) {
      REQUIRE_MESSAGE(g->find(metric), "missing " << group << "." << metric);
      check_distribution(*g->find(metric));
    }
  }
  CHECK(report.find("overall")->find("images")->text == "3");
  CHECK(grouped == 3);
  REQUIRE(report.find("images")->items.size() == 3);
  for (const json::Value& image : report.find("images")->items) {
    for (const char* metric : {"dice", "sensitivity", "specificity", "mae", "infection_rate"}) {
      REQUIRE_MESSAGE(image.find(metric), "missing " << metric);
      const double x = std::stod(image.find(metric)->text);
      CHECK(x >= 0.0);
      CHECK(x <= 1.0);
    }
  }

  CHECK_FALSE(fs::exists(dir.file("predicted.tmp")));
  int pngs = 0;
  for (const auto& entry : fs::directory_iterator(dir.file("predicted"))) {
    (void)entry;
    ++pngs;
  }
  CHECK(pngs == 3);

  // The overview: the three slices in one row, each shrunk to at most 256 pixels a side,
  // in the radiological display: the MedSeg pictures (all three taller than wide) are
  // its transpose, so each tile is as wide as its picture is tall.
  const data::Volume overview = data::read_image(dir.file("overview.png"));
  int64_t widest = 0, tallest = 0;
  for (const char* stem : kStems) {
    const data::Volume image = data::read_image(dir.file("images/" + std::string(stem) + ".jpg"));
    REQUIRE(image.ny > image.nx);
    const int64_t factor = (std::max(image.nx, image.ny) + 255) / 256;
    widest = std::max(widest, image.ny / factor);
    tallest = std::max(tallest, image.nx / factor);
  }
  CHECK(overview.nx == 3 * widest + 4 * 4);  // montage gaps of 4 around and between the tiles
  CHECK(overview.ny == tallest + 2 * 4);
  CHECK(run.err.find("the 3 lowest-Dice slices drawn in") != std::string::npos);
  for (const char* stem : kStems) {
    const data::Volume image = data::read_image(dir.file("images/" + std::string(stem) + ".jpg"));
    const data::Volume mask = data::read_image(dir.file("predicted/" + std::string(stem) + ".png"));
    CHECK(mask.nx == image.nx);
    CHECK(mask.ny == image.ny);
    // read_image gives a 0/255 PNG as 0/1 labels (an all-black one as 0s).
    int64_t other = 0;
    for (float v : mask.voxels) other += v != 0.f && v != 1.f;
    CHECK(other == 0);
  }
}

TEST_CASE("eval: JSON on stdout, explicit options, errors and exit codes") {
  test::TempDir dir;
  set_up(dir);
  SUBCASE("--json alone prints only JSON") {
    const test::ProgramRun run = run_eval(dir, data_args(dir) + " --width 0.0625 --size 64 --threshold 0.3 --batch 2 --json");
    REQUIRE_MESSAGE(run.exit_code == 0, run.err);
    const json::Value report = json::parse(run.out);
    CHECK(report.find("threshold")->text == "0.3");
    CHECK(report.find("images")->items.size() == 3);
  }
  SUBCASE("an architecture that does not match the weights") {
    const test::ProgramRun run = run_eval(dir, data_args(dir) + " --width 0.5");
    CHECK(run.exit_code == 1);
    CHECK(run.err.find("weights.safetensors") != std::string::npos);
  }
  SUBCASE("an unknown option") {
    const test::ProgramRun run = run_eval(dir, data_args(dir) + " --frobnicate");
    CHECK(run.exit_code == 2);
    CHECK(run.err.find("--frobnicate") != std::string::npos);
  }
  SUBCASE("missing weights") {
    const test::ProgramRun run = run_eval(dir, "--weights " + dir.file("none.safetensors") + " --images " + dir.file("images") +
                                      " --masks " + dir.file("masks"));
    CHECK(run.exit_code == 1);
    CHECK(run.err.find("none.safetensors") != std::string::npos);
  }
  SUBCASE("a mask folder without the images' masks") {
    fs::remove(dir.file("masks/1.png"));
    const test::ProgramRun run = run_eval(dir, data_args(dir));
    CHECK(run.exit_code == 1);
    CHECK(run.err.find("1.jpg") != std::string::npos);
  }
  SUBCASE("--overview into a folder that does not exist is refused before segmenting") {
    const test::ProgramRun run = run_eval(dir, data_args(dir) + " --overview " + dir.file("no/such/folder/o.png"));
    CHECK(run.exit_code == 1);
    CHECK(run.err.find("its folder does not exist") != std::string::npos);
    CHECK(run.err.find("images/s") == std::string::npos);
  }
  SUBCASE("--json or --overview onto the weights, a folder or a FIFO: refused before segmenting, nothing changed") {
    const std::vector<char> weights_before = test::read_bytes(dir.file("weights.safetensors"));
    const test::ProgramRun onto_weights = run_eval(dir, data_args(dir) + " --json " + dir.file("weights.safetensors"));
    CHECK(onto_weights.exit_code == 1);
    CHECK(onto_weights.err.find("is also an input") != std::string::npos);
    CHECK(test::read_bytes(dir.file("weights.safetensors")) == weights_before);
    fs::create_directories(dir.file("a-folder"));
    const test::ProgramRun onto_folder = run_eval(dir, data_args(dir) + " --overview " + dir.file("a-folder"));
    CHECK(onto_folder.exit_code == 1);
    CHECK(onto_folder.err.find("exists and is not a regular file") != std::string::npos);
    CHECK(onto_folder.err.find("images/s") == std::string::npos);  // before the work
    // Into the folders of slices read: it would replace a mask, or join the slices next time.
    const std::vector<char> mask_before = test::read_bytes(dir.file("masks/1.png"));
    const test::ProgramRun onto_mask = run_eval(dir, data_args(dir) + " --overview " + dir.file("masks/1.png"));
    CHECK(onto_mask.exit_code == 1);
    CHECK_MESSAGE(onto_mask.err.find("is in " + dir.file("masks") + ", a folder of inputs") != std::string::npos,
                  onto_mask.err);
    CHECK(test::read_bytes(dir.file("masks/1.png")) == mask_before);
    const test::ProgramRun into_images = run_eval(dir, data_args(dir) + " --json " + dir.file("images/scores.json"));
    CHECK(into_images.exit_code == 1);
    CHECK_FALSE(fs::exists(dir.file("images/scores.json")));
    const test::ProgramRun twice =
        run_eval(dir, data_args(dir) + " --json " + dir.file("a.out") + " --overview " + dir.file("./a.out"));
    CHECK(twice.exit_code == 2);
    CHECK(twice.err.find("--json and --overview name the same file") != std::string::npos);
  }
  SUBCASE("--save-masks into an existing folder is refused") {
    fs::create_directories(dir.file("exists"));
    const test::ProgramRun run = run_eval(dir, data_args(dir) + " --save-masks " + dir.file("exists"));
    CHECK(run.exit_code == 1);
    CHECK(run.err.find("already exists") != std::string::npos);
  }
}

TEST_CASE("the ground truth scored against itself: Dice 1, MAE 0") {
  const fs::path medseg = fs::path(test::data_dir()) / "medseg-semiseg" / "train";
  const data::Dataset set = data::load_dataset((medseg / "images").string(), (medseg / "masks").string());
  REQUIRE(set.size() >= 3);
  for (int64_t i = 0; i < 3; ++i) {
    const data::Volume& mask = set.samples[i].mask;
    std::vector<float> p(mask.voxels.begin(), mask.voxels.end());
    std::vector<uint8_t> y(p.size());
    for (size_t k = 0; k < p.size(); ++k) y[k] = p[k] != 0.f;
    const metrics::ImageMetrics m =
        metrics::score_image(p.data(), y.data(), static_cast<int64_t>(p.size()), 0.5);
    CHECK(m.dice == 1.0);
    CHECK(m.sensitivity == 1.0);
    CHECK(m.specificity == 1.0);
    CHECK(m.mae == 0.0);
    CHECK(m.infection_rate > 0.0);
  }
}

namespace {

// `covidrate eval <args>` with a file-size limit of `blocks` (sh's ulimit -f:
// 512-byte blocks in dash, 1024 in bash) and SIGXFSZ ignored, so that writing
// a file past the limit fails with EFBIG ("File too large"), as on a full
// disk. Its stderr goes through a pipe, which the limit does not touch, so the
// message is seen whole.
test::ProgramRun run_eval_with_file_limit(const test::TempDir& dir, const std::string& args, int blocks) {
  const std::string out = dir.file("stdout.txt"), err = dir.file("stderr.txt"), status = dir.file("status.txt");
  const std::string limited = "trap \"\" XFSZ; ulimit -f " + std::to_string(blocks) + "; exec " +
                              test::covidrate_program() + " eval " + args + " > " + out;
  const std::string script = "{ (" + limited + "); echo $? > " + status + "; } 2>&1 | cat > " + err;
  const int rc = std::system(("sh -c '" + script + "'").c_str());
  REQUIRE(WIFEXITED(rc));
  REQUIRE(WEXITSTATUS(rc) == 0);
  return {std::stoi(test::read_text_file(status)), test::read_text_file(out), test::read_text_file(err)};
}

// The names in `folder` that contain `part`.
std::vector<std::string> names_containing(const std::string& folder, const std::string& part) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) {
    const std::string name = entry.path().filename().string();
    if (name.find(part) != std::string::npos) names.push_back(name);
  }
  return names;
}

}  // namespace

TEST_CASE("eval: an overview that cannot be written whole is an error, and leaves nothing behind") {
  // The overview PNG is tens of KB; 8 blocks are 4 KB at most: its write fails
  // midway, as on a full disk (stb's writer once left a truncated PNG, exit 0).
  test::TempDir dir;
  set_up(dir);
  const std::string overview = dir.file("overview.png");
  const test::ProgramRun run = run_eval_with_file_limit(dir, data_args(dir) + " --overview " + overview, 8);
  CHECK(run.exit_code == 1);
  CHECK_MESSAGE(run.err.find("cannot write " + overview) != std::string::npos, run.err);
  CHECK_MESSAGE(run.err.find("File too large") != std::string::npos, run.err);
  CHECK(run.err.find("lowest-Dice slices drawn") == std::string::npos);
  CHECK_FALSE(fs::exists(overview));
  CHECK(names_containing(dir.path(), "overview").empty());  // no temporary either
}

TEST_CASE("eval: masks that cannot be written are an error, and the masks folder never appears") {
  // A limit of 0: every mask fails at its first byte, however small its PNG
  // (an untrained network's all-black mask deflates to a few hundred bytes).
  test::TempDir dir;
  set_up(dir);
  const std::string masks = dir.file("predicted");
  const test::ProgramRun run = run_eval_with_file_limit(dir, data_args(dir) + " --save-masks " + masks, 0);
  CHECK(run.exit_code == 1);
  CHECK_MESSAGE(run.err.find("cannot write " + masks + ".tmp/") != std::string::npos, run.err);
  CHECK_MESSAGE(run.err.find("File too large") != std::string::npos, run.err);
  CHECK_FALSE(fs::exists(masks));
  CHECK_FALSE(fs::exists(masks + ".tmp"));  // the unfinished folder goes with the failure
}
