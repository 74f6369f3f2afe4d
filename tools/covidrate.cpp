// The covidrate command: one program, one subcommand per job.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>

#include "kernels/op_profile.h"
#include "tools/cli.h"
#include "tools/commands.h"

namespace {
void usage(FILE* out) {
  std::fprintf(out,
               "usage: covidrate <command> [options]\n\n"
               "commands:\n");
  for (const auto& c : covidrate::tools::commands()) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out, "\nrun 'covidrate <command> --help' for a command's options\n");
}

// What a command printed must have been written: a full disk or /dev/full as
// standard output is a failure (exit 1, the reason on stderr), not a silent
// truncation with exit 0.
int finish_stdout(int status) {
  errno = 0;
  std::cout.flush();
  const bool flushed = std::fflush(stdout) == 0;
  const int error = errno;
  if (flushed && !std::cout.fail() && !std::ferror(stdout)) return status;
  if (error != 0)
    std::fprintf(stderr, "covidrate: cannot write to standard output: %s\n", std::strerror(error));
  else
    std::fprintf(stderr, "covidrate: cannot write to standard output\n");
  return status != 0 ? status : 1;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    usage(argc < 2 ? stderr : stdout);
    return finish_stdout(argc < 2 ? 2 : 0);
  }
  // The spellings other programs take for these.
  const std::string name = !std::strcmp(argv[1], "--version") ? "version" : argv[1];
  for (const auto& c : covidrate::tools::commands()) {
    if (name == c.name) {
      try {
        const int status = c.run(argc - 1, argv + 1);
        // COVIDRATE_PROFILE=1: where the command's time inside ops went.
        if (covidrate::profile::enabled()) std::fputs(covidrate::profile::report().c_str(), stderr);
        return finish_stdout(status);
      } catch (const covidrate::tools::UsageError& e) {
        std::fprintf(stderr, "covidrate %s: %s\nrun 'covidrate %s --help' for its arguments and options\n", c.name,
                     e.what(), c.name);
        return 2;
      } catch (const std::exception& e) {
        std::string text = covidrate::tools::error_text(e);
        // Library messages often start with the command that raises them ("segment: "): said once.
        if (const std::string prefix = std::string(c.name) + ": "; text.starts_with(prefix)) text.erase(0, prefix.size());
        std::fprintf(stderr, "covidrate %s: error: %s\n", c.name, text.c_str());
        return 1;
      }
    }
  }
  std::fprintf(stderr, "covidrate: unknown command '%s'\n\n", name.c_str());
  usage(stderr);
  return 2;
}
