// What a benchmark reads about its own process (Linux): fields of
// /proc/self/status, a reset of the peak resident set, and the CPU time of all
// its threads. Shared by bench_network and bench_pipeline.
#pragma once
#include <ctime>
#include <fstream>
#include <string>

namespace covidrate::bench {

// A field of /proc/self/status ("VmRSS", "VmHWM") in bytes; 0 where absent.
inline double proc_status_bytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return 1024.0 * std::stod(line.substr(field.size() + 1));
  }
  return 0;
}

// CPU seconds of the whole process (every thread) so far.
inline double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Sets the peak resident set (VmHWM) to the current one (Linux >= 4.0).
inline void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

}  // namespace covidrate::bench
