// The readers take paths, so each fuzz input is written to a scratch file in
// /dev/shm (memory, not disk) first; the name is per process so parallel
// fuzzing jobs (-jobs=N) do not share it.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

inline std::string write_fuzz_input(const uint8_t* data, size_t size, const char* suffix) {
  const std::string path = "/dev/shm/covidrate-fuzz-" + std::to_string(::getpid()) + suffix;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}
