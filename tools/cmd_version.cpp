#include <cstdio>

#include "nn/device.h"

namespace covidrate::tools {

int cmd_version(int, char**) {
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
