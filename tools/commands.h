// The table of subcommands. Each lives in tools/cmd_<name>.cpp and registers
// itself in tools/commands.cpp.
#pragma once
#include <vector>

namespace covidrate::tools {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int argc, char** argv);  // argv[0] is the command's name
};

const std::vector<Command>& commands();

}  // namespace covidrate::tools
