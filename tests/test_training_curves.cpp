// The picture of a training run (model/training_curves.h): what it draws from
// which records, the log it reads, and `covidrate curves` on the shipped
// weights' log.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "model/training_curves.h"
#include "tests/support/run_covidrate.h"
#include "tests/support/test_support.h"
#include "tests/temp_files.h"

using namespace covidrate;

namespace {

constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

EpochRecord record(int epoch, double train_loss, double val_loss, double val_dice) {
  return {.epoch = epoch, .train_loss = train_loss, .val_loss = val_loss, .val_dice = val_dice};
}

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

// The point lists of the drawn lines (polylines of width 2), in order.
std::vector<std::string> lines_of(const std::string& svg) {
  std::vector<std::string> points;
  const std::string tag = "<polyline fill='none' stroke-width='2'";
  for (size_t at = svg.find(tag); at != std::string::npos; at = svg.find(tag, at + 1)) {
    const size_t begin = svg.find("points='", at) + 8;
    points.push_back(svg.substr(begin, svg.find('\'', begin) - begin));
  }
  return points;
}

}  // namespace

TEST_CASE("training curves: one line per series, a point per epoch, the best epoch marked") {
  const std::vector<EpochRecord> epochs = {record(1, 1.0, 0.9, 0.5), record(2, 0.8, 0.6, 0.7),
                                           record(3, 0.7, 0.65, 0.72)};
  CHECK(best_epoch_of(epochs) == 2);
  const std::string svg = training_curves_svg(epochs, 2);
  CHECK(svg.rfind("<svg xmlns='http://www.w3.org/2000/svg'", 0) == 0);
  CHECK(svg.substr(svg.size() - 7) == "</svg>\n");
  const std::vector<std::string> lines = lines_of(svg);
  REQUIRE(lines.size() == 3);  // training loss, validation loss, validation Dice
  for (const std::string& l : lines) CHECK(count(l, ",") == 3);
  // Loss panel x: 60 .. 430 over epochs 1 .. 3; y: 280 (0) .. 48 (the axis top, 1).
  CHECK(lines[0] == "60,48 245,94.4 430,117.6");
  // Dice panel x: 510 .. 880; y: 280 (0) .. 48 (1).
  CHECK(lines[2] == "510,164 695,117.6 880,112.96");
  CHECK(svg.find("best epoch 2 (validation loss 0.6, Dice 0.7)") != std::string::npos);
  CHECK(count(svg, "<line x1='245' y1='48' x2='245' y2='280' stroke='#777'") == 1);  // the best epoch, loss panel
  CHECK(count(svg, "<line x1='695' y1='48' x2='695' y2='280' stroke='#777'") == 1);  // and Dice panel
}

TEST_CASE("training curves: no validation set, gaps, one epoch") {
  // Without a validation set the trainer logs Dice as NaN: no Dice line, and the legend says so.
  const std::vector<EpochRecord> no_validation = {record(1, 1.0, 1.0, kNan), record(2, 0.5, 0.5, kNan)};
  std::string svg = training_curves_svg(no_validation, best_epoch_of(no_validation));
  CHECK(lines_of(svg).size() == 2);
  CHECK(svg.find("no validation set") != std::string::npos);
  CHECK(svg.find(", Dice") == std::string::npos);

  // A non-finite value breaks its line: validation loss 1..2, a gap, 4..5.
  const std::vector<EpochRecord> gap = {record(1, 1, 1, 0.1), record(2, 1, 1, 0.2), record(3, 1, kNan, 0.3),
                                        record(4, 1, 1, 0.4), record(5, 1, std::numeric_limits<double>::infinity(), 0.5)};
  svg = training_curves_svg(gap, 0);
  CHECK(lines_of(svg).size() == 3);  // training, validation 1..2, Dice (validation's lone point at 4 is a dot)
  CHECK(count(svg, "<circle") == 1);
  CHECK(svg.find("best epoch") == std::string::npos);  // 0: none marked

  // One epoch: a dot per series in the middle of the axis.
  svg = training_curves_svg({record(1, 0.5, 0.4, 0.6)}, 1);
  CHECK(lines_of(svg).empty());
  CHECK(count(svg, "<circle cx='245'") == 2);
  CHECK(count(svg, "<circle cx='695'") == 1);

  CHECK_THROWS_WITH_AS(training_curves_svg({}, 0), doctest::Contains("no epochs"), Error);
  CHECK_THROWS_WITH_AS(training_curves_svg({record(2, 1, 1, 1), record(1, 1, 1, 1)}, 0),
                       doctest::Contains("epoch 1 follows epoch 2"), Error);
}

TEST_CASE("best_epoch_of: the lowest finite validation loss, the first of equals") {
  CHECK(best_epoch_of({record(1, 1, 0.5, 0), record(2, 1, 0.4, 0), record(3, 1, 0.4, 0)}) == 2);
  CHECK(best_epoch_of({record(1, 1, kNan, 0), record(2, 1, 0.7, 0)}) == 2);
  CHECK(best_epoch_of({record(1, 1, kNan, 0)}) == 0);
}

TEST_CASE("read_training_log reads the shipped weights' log and refuses a damaged one") {
  const std::string shipped = test::source_dir() + "/weights/covidrate-w1-s512.log.jsonl";
  const std::vector<EpochRecord> epochs = read_training_log(shipped);
  REQUIRE(epochs.size() >= 10);
  for (size_t i = 0; i < epochs.size(); ++i) CHECK(epochs[i].epoch == static_cast<int>(i) + 1);
  CHECK(std::isfinite(epochs.front().val_dice));

  test::TempDir dir;
  const auto write = [&](const std::string& text) {
    std::ofstream(dir.file("log.jsonl"), std::ios::trunc) << text;
    return dir.file("log.jsonl");
  };
  CHECK_THROWS_WITH_AS(read_training_log(write("{\"epoch\": 1, \"train_loss\": 1}\nnot json\n")),
                       doctest::Contains("line 2: not a training log record"), Error);
  CHECK_THROWS_WITH_AS(read_training_log(write("{\"epoch\": 2}\n{\"epoch\": 1}\n")),
                       doctest::Contains("line 2: epoch 1 follows epoch 2"), Error);
  CHECK_THROWS_WITH_AS(read_training_log(write("{\"train_loss\": 1}\n")), doctest::Contains("no epoch number"),
                       Error);
  CHECK_THROWS_WITH_AS(read_training_log(dir.file("missing.jsonl")), doctest::Contains("missing.jsonl"), Error);
}

TEST_CASE("covidrate curves draws a log beside it, or where --out says") {
  test::TempDir dir;
  const std::string log = dir.file("run.log.jsonl");
  std::filesystem::copy_file(test::source_dir() + "/weights/covidrate-w1-s512.log.jsonl", log);
  test::ProgramRun run = test::run_covidrate(dir, "curves " + log);
  CHECK(run.exit_code == 0);
  CHECK(run.out.find("best") != std::string::npos);
  const std::string svg = test::read_text_file(dir.file("run.log.svg"));
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(lines_of(svg).size() == 3);
  for (const auto& entry : std::filesystem::directory_iterator(dir.file("")))  // no temporary file left
    CHECK_MESSAGE(entry.path().filename().string().find(".tmp") == std::string::npos, entry.path());

  run = test::run_covidrate(dir, "curves " + log + " --out " + dir.file("other.svg"));
  CHECK(run.exit_code == 0);
  CHECK(std::filesystem::exists(dir.file("other.svg")));

  run = test::run_covidrate(dir, "curves " + dir.file("missing.jsonl"));
  CHECK(run.exit_code != 0);
  CHECK(run.err.find("missing.jsonl") != std::string::npos);
  run = test::run_covidrate(dir, "curves " + log + " --colour red");
  CHECK(run.exit_code == 2);
  CHECK(run.err.find("--colour") != std::string::npos);
}

TEST_CASE("covidrate curves never writes its picture over the log") {
  namespace fs = std::filesystem;
  test::TempDir dir;
  const std::string log = dir.file("run.log.jsonl");
  fs::copy_file(test::source_dir() + "/weights/covidrate-w1-s512.log.jsonl", log);
  const std::vector<char> before = test::read_bytes(log);
  // --out the log, as given or spelled another way, or a log named .svg drawn beside itself.
  fs::create_symlink(log, dir.file("link.jsonl"));
  fs::copy_file(log, dir.file("run.svg"));
  for (const std::string& args : {log + " --out " + log, log + " --out " + dir.file("./sub/../run.log.jsonl"),
                                  dir.file("link.jsonl") + " --out " + log, dir.file("run.svg")}) {
    CAPTURE(args);
    const test::ProgramRun run = test::run_covidrate(dir, "curves " + args);
    CHECK(run.exit_code == 1);
    CHECK(run.err.find("would replace the log") != std::string::npos);
    CHECK(test::read_bytes(log) == before);
  }
  CHECK(test::read_bytes(dir.file("run.svg")) == before);
  for (const auto& entry : fs::directory_iterator(dir.path()))  // and no temporary file
    CHECK_MESSAGE(entry.path().filename().string().find(".tmp") == std::string::npos, entry.path());
}
