// The covidrate program's command lines: every command reads its arguments
// through one scanner (tools/cli.h), so every command answers a bad command
// line the same way: "covidrate CMD: <what is wrong>", a pointer to --help,
// exit status 2, and nothing written. --help prints the usage on stdout, exit 0.
// gpu_check: CPU only (it names COVIDRATE_DEVICE only to unset it or to feed it a bad value).
#include <doctest/doctest.h>

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/run_covidrate.h"
#include "tests/support/test_support.h"
#include "tests/temp_files.h"

using namespace covidrate;

namespace {

// The commands run without COVIDRATE_DEVICE: what they answer must not depend
// on the device the environment asks for (cases below set it on purpose).
test::ProgramRun run_cli(const test::TempDir& dir, const std::string& arguments) {
  return test::run_covidrate(dir, arguments, "-u COVIDRATE_DEVICE");
}

// The command names, as `covidrate --help` lists them ("  name   summary").
std::vector<std::string> command_names(const test::TempDir& dir) {
  const test::ProgramRun run = run_cli(dir, "--help");
  REQUIRE(run.exit_code == 0);
  std::vector<std::string> names;
  std::istringstream lines(run.out);
  bool in_table = false;
  for (std::string line; std::getline(lines, line);) {
    if (line == "commands:") {
      in_table = true;
    } else if (in_table && line.rfind("  ", 0) == 0) {
      std::istringstream words(line);
      std::string name;
      words >> name;
      names.push_back(name);
    } else if (in_table) {
      break;
    }
  }
  return names;
}

// A usage error: status 2, the first line of stderr is "covidrate CMD: MESSAGE"
// (or begins with it, with `prefix`), the second points to --help.
void check_usage_error(const test::TempDir& dir, const std::string& command, const std::string& arguments,
                       const std::string& message, bool prefix = false) {
  const test::ProgramRun run = run_cli(dir, command + " " + arguments);
  INFO("covidrate " << command << " " << arguments << "\nstderr:\n" << run.err);
  CHECK(run.exit_code == 2);
  const std::string first_line = run.err.substr(0, run.err.find('\n'));
  const std::string expected = "covidrate " + command + ": " + message;
  if (prefix) {
    CHECK(first_line.rfind(expected, 0) == 0);
  } else {
    CHECK(first_line == expected);
  }
  CHECK(run.err.find("run 'covidrate " + command + " --help'") != std::string::npos);
}

}  // namespace

TEST_CASE("every command: --help prints its usage, an unknown option is a usage error naming it") {
  test::TempDir dir;
  const std::vector<std::string> names = command_names(dir);
  CHECK(names.size() >= 12);
  for (const std::string& name : names) {
    CAPTURE(name);
    const test::ProgramRun help = run_cli(dir, name + " --help");
    CHECK(help.exit_code == 0);
    CHECK(help.out.rfind("usage: covidrate " + name, 0) == 0);
    check_usage_error(dir, name, "--no-such-option", "unknown option '--no-such-option'");
  }
}

TEST_CASE("option values are checked before any work: missing, malformed, out of range") {
  test::TempDir dir;
  // OUT in the arguments stands for a folder that must never appear.
  const std::string out = dir.file("out");
  struct Case {
    const char* command;
    std::string arguments, message;
    bool prefix = false;  // the message's start only
  };
  const std::vector<Case> cases = {
      {"segment", "study --out", "--out needs a value"},
      // An unset variable in a script: not the default.
      {"segment", "study --out OUT --weights ''", "--weights needs a value, and was given an empty one"},
      {"train", "--images i --masks m --out OUT --init ''", "--init needs a value, and was given an empty one"},
      {"model", "--svg ''", "--svg needs a value, and was given an empty one"},
      // A forgotten value: the next option is not taken for it.
      {"lungs", "ct.nii.gz --out --json", "--out needs a value, and is followed by the option --json", true},
      {"segment", "study --out OUT --threshold 1", "--threshold must be below 1, got 1"},
      {"segment", "study --out OUT --threshold 2", "--threshold needs a number in [0, 1], got '2'"},
      {"segment", "study --out OUT --threshold -1", "--threshold needs a number in [0, 1], got '-1'"},
      {"segment", "study --out OUT --batch 2.5", "--batch needs an integer in [1, 4096], got '2.5'"},
      {"segment", "study --out OUT --size 40", "--size must be a multiple of 16, got 40"},
      {"segment", "study --out OUT --device tpu", "--device: unknown device 'tpu'", true},
      {"segment", "study --out OUT --precision f16", "--precision must be f32 or bf16, got 'f16'"},
      {"segment", "study", "an INPUT and --out are required"},
      {"train", "--images i --masks m --out OUT --epochs 0", "--epochs needs an integer in [1, 1000000], got '0'"},
      // The validation slices choose the best weights and stop the run early: there must be some.
      {"train", "--images i --masks m --out OUT --val-fraction 0",
       "--val-fraction needs a number in (0, 0.95], got '0'"},
      {"train", "--images i --masks m --out OUT --val-fraction 0.99",
       "--val-fraction needs a number in (0, 0.95], got '0.99'"},
      // --folds and --split choose the validation slices themselves: a fraction beside them would be ignored.
      {"train", "--images i --masks m --out OUT --folds 3 --val-fraction 0.3",
       "--val-fraction does not apply with --folds: each fold validates on its own 1/K of the slices"},
      {"train", "--images i --masks m --out OUT --val-fraction 0.3 --split s.json",
       "--val-fraction does not apply with --split: the split file says which slices validate"},
      {"train", "--images i --masks m --out OUT --val-fraction 0.3 --split s.json --folds 3",
       "--split and --folds exclude each other"},
      {"pseudo-label", "--weights w --images i --out OUT --top 0",
       "--top needs an integer in [1, 1000000000], got '0'"},
      {"eval", "--weights w --images i --masks m --threshold 1", "--threshold must be below 1, got 1"},
      {"synth", "--ratio 1 --out OUT --seed 1e3", "--seed needs an integer in [0, 9223372036854775807], got '1e3'"},
      {"synth", "--ratio many --out OUT", "--ratio needs a number in [1e-06, 1000], got 'many'"},
      {"synth", "--ratio 1", "--ratio and --out are required"},
      {"lungs", "a.nii.gz b.nii.gz --out OUT", "unexpected argument 'b.nii.gz'"},
      {"lungs", "a.nii.gz --out OUT --slices 3,x", "--slices needs an integer in [0, 1000000], got 'x'"},
      {"info", "-", "unknown option '-'"},  // no command reads standard input
      {"info", "", "a PATH is required"},
      {"model", "--width 0", "--width needs a number in [0.001, 4], got '0'"},
      {"model", "--size 40", "--size must be a multiple of 16, got 40"},
      {"model", "--arch unet --no-cpb", "--no-cpb and --no-se are COVID-Rate's; unet has neither"},
      {"weights", "frobnicate x", "unknown action 'frobnicate': info or convert"},
      {"weights", "convert a b --dtype f8", "weights convert: --dtype must be f16, bf16 or f32, got 'f8'"},
      {"curves", "a.jsonl b.jsonl", "unexpected argument 'b.jsonl'"},
      {"demo", "--steps 0", "--steps needs an integer in [1, 1000000], got '0'"},
      {"version", "now", "unexpected argument 'now'"},
  };
  for (const Case& c : cases) {
    std::string arguments = c.arguments;
    if (const size_t at = arguments.find("OUT"); at != std::string::npos) arguments.replace(at, 3, out);
    check_usage_error(dir, c.command, arguments, c.message, c.prefix);
  }
  CHECK_FALSE(std::filesystem::exists(out));  // nothing was written
}

TEST_CASE("--help anywhere on the line; the environment's device is read only when --device is not given") {
  test::TempDir dir;
  const test::ProgramRun help = run_cli(dir, "segment study --out x --threshold 0.3 --help");
  CHECK(help.exit_code == 0);
  CHECK(help.out.rfind("usage: covidrate segment", 0) == 0);
  // A device name the program does not know, in the environment.
  const std::string bad_env = "COVIDRATE_DEVICE=abacus";
  for (const char* command : {"eval", "segment", "pseudo-label", "demo", "train"}) {
    CAPTURE(command);
    const test::ProgramRun r = test::run_covidrate(dir, std::string(command) + " --help", bad_env);
    CHECK(r.exit_code == 0);
  }
  // --device cpu wins over it: eval gets as far as the missing weights file.
  const test::ProgramRun chosen =
      test::run_covidrate(dir, "eval --weights missing.safetensors --images i --masks m --device cpu", bad_env);
  CHECK(chosen.exit_code == 1);
  CHECK(chosen.err.find("missing.safetensors") != std::string::npos);
  // Without --device the environment decides, and a bad value is an error (not a usage error).
  const test::ProgramRun from_env = test::run_covidrate(dir, "eval --weights w --images i --masks m", bad_env);
  CHECK(from_env.exit_code == 1);
  CHECK(from_env.err.find("COVIDRATE_DEVICE is 'abacus', an unknown device") != std::string::npos);
  // The optional value of eval's --json: a file name, unless the next argument is an option.
  check_usage_error(dir, "eval", "--json report.json --no-such-option", "unknown option '--no-such-option'");
}

TEST_CASE("a failure while working is not a usage error: status 1, the file named") {
  test::TempDir dir;
  const test::ProgramRun r = run_cli(dir, "info " + dir.file("missing.nii.gz"));
  CHECK(r.exit_code == 1);
  CHECK(r.err.rfind("covidrate info: error: ", 0) == 0);
  CHECK(r.err.find("missing.nii.gz") != std::string::npos);
  // The command is named once, and it is the one that ran (info reads folders as segment does).
  const test::ProgramRun missing = run_cli(dir, "segment " + dir.file("nothing") + " --out " + dir.file("o"));
  CHECK(missing.err == "covidrate segment: error: " + dir.file("nothing") + " not found\n");
  std::filesystem::create_directories(dir.file("empty"));
  const test::ProgramRun empty = run_cli(dir, "info " + dir.file("empty"));
  CHECK(empty.exit_code == 1);
  CHECK(empty.err.rfind("covidrate info: error: " + dir.file("empty") + " holds no DICOM", 0) == 0);
}

TEST_CASE("demo checks its --out before training, not after; a rerun replaces its one file") {
  test::TempDir dir;
  test::write_bytes(dir.file("a-file"), {'x'});
  for (const std::string& out : {dir.file("a-file"), dir.file("a-file") + "/sub"}) {
    const test::ProgramRun r = run_cli(dir, "demo --steps 20 --log-every 1 --out " + out);
    CAPTURE(r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.out.find("step") == std::string::npos);  // no training started
    CHECK(r.err.find("a-file") != std::string::npos);
  }
  for (int run = 0; run < 2; ++run) {  // the trailing slash is the folder itself
    const test::ProgramRun r = run_cli(dir, "demo --steps 2 --out " + dir.file("demo") + "/");
    CHECK_MESSAGE(r.exit_code == 0, r.err);
  }
  CHECK(std::filesystem::is_regular_file(dir.file("demo/demo.safetensors")));
}

TEST_CASE("covidrate info takes a folder as segment does: a series, pictures (the first described), or studies (listed)") {
  namespace fs = std::filesystem;
  test::TempDir dir;
  const test::ProgramRun series = run_cli(dir, "info " + test::source_dir() + "/examples/ricord-sample");
  REQUIRE_MESSAGE(series.exit_code == 0, series.err);
  CHECK(series.out.find("512 x 512 x 8 voxels") != std::string::npos);

  const std::string medseg = test::data_dir() + "/medseg-semiseg/train/images/";
  fs::create_directories(dir.file("pictures"));
  for (const char* n : {"0.jpg", "1.jpg"}) fs::copy_file(medseg + n, dir.file(std::string("pictures/") + n));
  const test::ProgramRun pictures = run_cli(dir, "info " + dir.file("pictures"));  // it said "no DICOM image files"
  REQUIRE_MESSAGE(pictures.exit_code == 0, pictures.err);
  CHECK(pictures.out.find("2 pictures, one study for segment; this is the first, 0.jpg") != std::string::npos);
  CHECK(pictures.out.find("1 mm pixels assumed") != std::string::npos);

  // A DICOM series in a sub-folder and a NIfTI file beside it: two studies, not one series.
  fs::create_directories(dir.file("studies/a"));
  fs::copy_file(test::source_dir() + "/examples/ricord-sample/1-121.dcm", dir.file("studies/a/1-121.dcm"));
  fs::copy_file(test::data_dir() + "/lung-masks-zenodo/coronacases_001_slice_98_ct.nii.gz", dir.file("studies/b.nii.gz"));
  const test::ProgramRun studies = run_cli(dir, "info " + dir.file("studies"));
  REQUIRE_MESSAGE(studies.exit_code == 0, studies.err);
  CHECK(studies.out.find("a folder of 2 studies") != std::string::npos);
  const test::ProgramRun listed = run_cli(dir, "info " + dir.file("studies") + " --json");
  REQUIRE_MESSAGE(listed.exit_code == 0, listed.err);
  CHECK(listed.out.find("\"kind\": \"studies\"") != std::string::npos);
  CHECK(listed.out.find("\"name\": \"b\", \"kind\": \"nifti\"") != std::string::npos);
}

TEST_CASE("covidrate --version and covidrate help, as other programs take them") {
  test::TempDir dir;
  const test::ProgramRun version = run_cli(dir, "--version");
  CHECK(version.exit_code == 0);
  CHECK(version.out.rfind("covidrate ", 0) == 0);
  const test::ProgramRun help = run_cli(dir, "help");
  CHECK(help.exit_code == 0);
  CHECK(help.out.find("usage: covidrate <command>") != std::string::npos);
}
