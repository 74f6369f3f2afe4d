// Introspection of the cuDNN convolution plans (kernels/cuda/cudnn_conv.cpp),
// for tests and benchmarks. Only compiled when COVIDRATE_HAVE_CUDA.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace covidrate::cuda {

struct ConvPlanStats {
  uint64_t plans = 0;       // distinct shapes seen (descriptors built)
  uint64_t hits = 0;        // calls that found their shape's plan already built
  uint64_t searches = 0;    // algorithm choices made (cudnnFind*Ex or cudnnGet*_v7), one per shape and direction
  uint64_t loaded = 0;      // choices taken from the algorithm cache file instead of a search
};
ConvPlanStats conv_plan_stats();

// Where the measured choices are kept across processes (kernels/algorithm_cache.h):
// a file path, "" for none, nullopt for the default (COVIDRATE_CUDNN_CACHE, else
// ~/.cache/covidrate/). Takes effect at the next choice. For tests.
void set_algorithm_cache_path(std::optional<std::string> path);
// Drops every plan and choice of this process, as if it had just started (the
// file is kept). For tests.
void forget_conv_plans();

}  // namespace covidrate::cuda
