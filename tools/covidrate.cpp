// The covidrate command: one program, one subcommand per job.
#include <cstdio>
#include <cstring>
#include <exception>
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
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  for (const auto& c : covidrate::tools::commands()) {
    if (name == c.name) {
      try {
        const int status = c.run(argc - 1, argv + 1);
        // COVIDRATE_PROFILE=1: where the command's time inside ops went.
        if (covidrate::profile::enabled()) std::fputs(covidrate::profile::report().c_str(), stderr);
        return status;
      } catch (const covidrate::tools::UsageError& e) {
        std::fprintf(stderr, "covidrate %s: %s\nrun 'covidrate %s --help' for its arguments and options\n", c.name,
                     e.what(), c.name);
        return 2;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "covidrate %s: error: %s\n", c.name, e.what());
        return 1;
      }
    }
  }
  std::fprintf(stderr, "covidrate: unknown command '%s'\n\n", name.c_str());
  usage(stderr);
  return 2;
}
