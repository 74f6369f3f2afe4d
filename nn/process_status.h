// What a process can read about itself on Linux: a field of /proc/self/status.
// segment reports its peak resident set from it; the benchmarks measure memory
// with it (bench/process_stats.h).
#pragma once
#include <fstream>
#include <string>

namespace covidrate {

// A field of /proc/self/status ("VmRSS", "VmHWM") in bytes; -1 where there is
// no such file or field (not Linux).
inline double proc_status_bytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return 1024.0 * std::stod(line.substr(field.size() + 1));  // in kB (KiB)
  }
  return -1;
}

}  // namespace covidrate
