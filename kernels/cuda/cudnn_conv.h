// Introspection of the cuDNN convolution plans (kernels/cuda/cudnn_conv.cpp),
// for tests and benchmarks. Only compiled when COVIDRATE_HAVE_CUDA.
#pragma once
#include <cstdint>

namespace covidrate::cuda {

struct ConvPlanStats {
  uint64_t plans = 0;       // distinct shapes seen (descriptors built)
  uint64_t hits = 0;        // calls that found their shape's plan already built
  uint64_t searches = 0;    // algorithm choices made (cudnnFind*Ex or cudnnGet*_v7), one per shape and direction
};
ConvPlanStats conv_plan_stats();

}  // namespace covidrate::cuda
