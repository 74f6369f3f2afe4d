#include <cstdio>

#include "nn/device.h"
#include "tools/cli.h"

namespace covidrate::tools {

int cmd_version(int argc, char** argv) {
  ArgScanner args(argc, argv);
  while (args.next()) {
    if (args.help()) {
      std::printf("usage: covidrate version\n\nPrints the version, whether the CUDA backend is built and whether a GPU is present.\n");
      return 0;
    }
    args.unknown();
  }
  std::printf("covidrate 0.1.0\n");
#if COVIDRATE_HAVE_CUDA
  std::printf("cuda backend: built; %s\n",
              cuda_available() ? "a GPU is present" : cuda_unavailable_reason().c_str());
#else
  std::printf("cuda backend: not built\n");
#endif
  return 0;
}

}  // namespace covidrate::tools
