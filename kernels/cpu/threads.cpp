#include "kernels/cpu/threads.h"

#include <algorithm>
#include <cstdlib>
#include <thread>
#include <vector>

#include "nn/error.h"

// From OpenBLAS (also in its cblas.h; declared here so that this file does not
// depend on which cblas.h the include path finds).
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
  openblas_set_num_threads(1);  // see threads.h: we split the work, each gemm runs on one thread
  return n;
}
}  // namespace

int num_threads() {
  static const int n = read_thread_count();
  return n;
}

int64_t chunk_count(int64_t n, int64_t min_chunk) {
  if (n <= 0) return 0;
  return std::clamp<int64_t>(n / std::max<int64_t>(1, min_chunk), 1, num_threads());
}

void parallel_chunks(int64_t n, int64_t chunks,
                     const std::function<void(int64_t, int64_t, int64_t)>& body) {
  if (n <= 0 || chunks <= 0) return;
  auto bound = [&](int64_t i) { return n * i / chunks; };
  // Threads are started per call: every caller hands each thread milliseconds of
  // work, so the ~20 us start is noise, and no idle pool spins between ops.
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(chunks - 1));
  for (int64_t i = 1; i < chunks; ++i) {
    workers.emplace_back([&body, i, b = bound(i), e = bound(i + 1)] { body(i, b, e); });
  }
  body(0, bound(0), bound(1));
  for (auto& t : workers) t.join();
}

void parallel_for(int64_t n, int64_t min_chunk,
                  const std::function<void(int64_t, int64_t)>& body) {
  parallel_chunks(n, chunk_count(n, min_chunk),
                  [&](int64_t, int64_t begin, int64_t end) { body(begin, end); });
}

}  // namespace covidrate::cpu
