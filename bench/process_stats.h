// What a benchmark reads about its own process (Linux): fields of
// /proc/self/status, a reset of the peak resident set, and the CPU time of all
// its threads. Shared by bench_network and bench_pipeline.
#pragma once
#include <algorithm>
#include <ctime>
#include <fstream>
#include <string>

#include "nn/process_status.h"

namespace covidrate::bench {

// A field of /proc/self/status ("VmRSS", "VmHWM") in bytes; 0 where absent.
inline double proc_status_bytes(const std::string& field) { return std::max(0.0, covidrate::proc_status_bytes(field)); }

// CPU seconds of the whole process (every thread) so far.
inline double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Sets the peak resident set (VmHWM) to the current one (Linux >= 4.0).
inline void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

}  // namespace covidrate::bench
