#include "kernels/cpu/threads.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "nn/error.h"

// From OpenBLAS (declared in its cblas.h too; repeated here so this file does
// not depend on which cblas.h the include path finds).
extern "C" void openblas_set_num_threads(int num_threads);

namespace covidrate::cpu {

namespace {
int read_thread_count() {
  int n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (const char* env = std::getenv("COVIDRATE_THREADS"); env && *env) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    CR_CHECK(*end == '\0' && v >= 1 && v <= 1024,
             "COVIDRATE_THREADS: expected a thread count from 1 to 1024, got '" << env << "'");
    n = static_cast<int>(v);
  }
  openblas_set_num_threads(n);
  return n;
}
}  // namespace

int num_threads() {
  static const int n = read_thread_count();
  return n;
}

void parallel_for(int64_t n, int64_t min_chunk,
                  const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  const int64_t by_size = n / std::max<int64_t>(1, min_chunk);
  const int64_t chunks = std::clamp<int64_t>(by_size, 1, num_threads());
  if (chunks == 1) {
    body(0, n);
    return;
  }
  // Threads are started per call: the loops we parallelize (im2col, col2im)
  // take milliseconds, so the ~20 us per start is noise, and without a pool
  // there are no idle threads spinning beside OpenBLAS's own.
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(chunks - 1));
  auto bounds = [&](int64_t i) { return n * i / chunks; };
  for (int64_t i = 1; i < chunks; ++i) {
    workers.emplace_back([&body, b = bounds(i), e = bounds(i + 1)] { body(b, e); });
  }
  body(bounds(0), bounds(1));
  for (auto& t : workers) t.join();
}

}  // namespace covidrate::cpu
