#include "tools/commands.h"

namespace covidrate::tools {

int cmd_version(int argc, char** argv);

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"version", "print the version, the build options and the devices present", cmd_version},
  };
  return table;
}

}  // namespace covidrate::tools
