// Included by every CUDA test program: without a usable GPU the program prints
// why and exits with test::kSkipExitCode before doctest runs, so ctest reports
// it as skipped (never as passed).
#pragma once
#include <cstdio>
#include <cstdlib>

#include "nn/device.h"
#include "tests/support/test_support.h"

namespace covidrate::test {

inline bool exit_unless_gpu() {
  if (!cuda_available()) {
    std::printf("SKIPPED: %s\n", cuda_unavailable_reason().c_str());
    std::fflush(stdout);
    std::exit(kSkipExitCode);
  }
  return true;
}

// Runs during static initialization, i.e. before main() and doctest.
inline const bool kGpuPresent = exit_unless_gpu();

}  // namespace covidrate::test
