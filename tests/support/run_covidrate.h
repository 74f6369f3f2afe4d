// Runs the built covidrate program from a test, as a user would: the program
// is built beside the test binaries; stdout and stderr are captured in files
// of the test's temporary folder.
#pragma once
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/temp_files.h"

namespace covidrate::test {

inline std::string covidrate_program() {
  const std::filesystem::path program =
      std::filesystem::read_symlink("/proc/self/exe").parent_path() / "covidrate";
  REQUIRE_MESSAGE(std::filesystem::exists(program), program << " is missing: build the covidrate target first");
  return program.string();
}

struct ProgramRun {
  int exit_code = -1;
  std::string out, err;
};

inline std::string read_text_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// `covidrate <arguments>` (arguments already quoted for the shell), in the
// test's environment changed by `env` (arguments of env(1), e.g. "-u VAR X=1").
inline ProgramRun run_covidrate(const TempDir& dir, const std::string& arguments, const std::string& env = "") {
  const std::string out = dir.file("stdout.txt"), err = dir.file("stderr.txt");
  const std::string program = env.empty() ? covidrate_program() : "env " + env + " " + covidrate_program();
  const int status = std::system((program + " " + arguments + " > " + out + " 2> " + err).c_str());
  REQUIRE(WIFEXITED(status));
  return {WEXITSTATUS(status), read_text_file(out), read_text_file(err)};
}

}  // namespace covidrate::test
