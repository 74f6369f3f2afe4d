// `cmake --install`: what a deployment gets. The build this test belongs to is
// installed into a temporary prefix; the installed program, run from a folder
// that has nothing to do with the source tree, must find the shipped weights
// in PREFIX/share/covidrate/weights and segment a slice with them.
// Skipped (exit 77) where the test program was copied away from its build tree.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "nn/json.h"
#include "tests/support/run_covidrate.h"
#include "tests/support/test_support.h"
#include "tests/temp_files.h"

using namespace covidrate;
namespace fs = std::filesystem;

namespace {

fs::path build_dir() { return fs::read_symlink("/proc/self/exe").parent_path(); }

bool exit_unless_build_tree() {
  if (!fs::is_regular_file(build_dir() / "CMakeCache.txt")) {
    std::printf("SKIPPED: no build tree beside %s to install from\n", build_dir().c_str());
    std::fflush(stdout);
    std::exit(test::kSkipExitCode);
  }
  return true;
}
const bool kHaveBuildTree = exit_unless_build_tree();

// Runs a shell command with stdout and stderr into `log`; its exit status.
int run(const std::string& command, const std::string& log) {
  const int status = std::system((command + " > " + log + " 2>&1").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST_CASE("the installed program finds its shipped weights and segments a slice from any folder") {
  test::TempDir dir;
  const fs::path prefix = dir.file("prefix");
  const std::string log = dir.file("install.log");
  REQUIRE_MESSAGE(run("cmake --install " + build_dir().string() + " --prefix " + prefix.string(), log) == 0,
                  test::read_text_file(log));
  const fs::path program = prefix / "bin" / "covidrate";
  const fs::path weights = prefix / "share" / "covidrate" / "weights";
  CHECK(fs::is_regular_file(program));
  CHECK(fs::is_regular_file(weights / "covidrate-w1-s512.safetensors"));
  CHECK(fs::is_regular_file(weights / "README.md"));  // the model card goes with them

  // From an empty folder, no COVIDRATE_WEIGHTS: only the installed copy can serve.
  const fs::path elsewhere = dir.file("elsewhere");
  fs::create_directories(elsewhere);
  const std::string slice = test::data_dir() + "/medseg-semiseg/train/images/0.jpg";
  const std::string out = (elsewhere / "result").string();
  const std::string segment_log = dir.file("segment.log");
  const int status = run("cd " + elsewhere.string() + " && env -u COVIDRATE_WEIGHTS " + program.string() +
                             " segment " + slice + " --out " + out,
                         segment_log);
  INFO(test::read_text_file(segment_log));
  REQUIRE(status == 0);
  const json::Value report = json::parse(test::read_text_file(out + "/report.json"));
  const json::Value* used = report.find("weights");
  REQUIRE(used != nullptr);
  const json::Value* path = used->find("path");
  REQUIRE(path != nullptr);
  CHECK(fs::equivalent(path->text, weights / "covidrate-w1-s512.safetensors"));
}
