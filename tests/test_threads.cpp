// The CPU worker pool behind parallel_chunks and parallel_for: every chunk runs
// once with its bounds, also when called from inside a chunk, from several
// threads at once, and thousands of times in a row (a lost wake-up would hang).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "kernels/cpu/threads.h"

using namespace covidrate;

namespace {
// Marks [begin, end) of hits, counting any index reached twice.
void cover(std::vector<std::atomic<int>>& hits, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
}
bool each_once(const std::vector<std::atomic<int>>& hits) {
  for (const auto& h : hits)
    if (h.load() != 1) return false;
  return true;
}
}  // namespace

TEST_CASE("parallel_chunks: each chunk once, contiguous near-equal bounds") {
  MESSAGE("CPU threads: " << cpu::num_threads());
  for (int64_t chunks : {1, 2, 3, 7}) {  // more chunks than threads is allowed too
    const int64_t n = 1000;
    std::vector<std::atomic<int>> hits(n);
    std::vector<std::atomic<int>> chunk_runs(static_cast<size_t>(chunks));
    std::vector<int64_t> begins(static_cast<size_t>(chunks)), ends(static_cast<size_t>(chunks));
    cpu::parallel_chunks(n, chunks, [&](int64_t chunk, int64_t begin, int64_t end) {
      chunk_runs[static_cast<size_t>(chunk)].fetch_add(1);
      begins[static_cast<size_t>(chunk)] = begin;
      ends[static_cast<size_t>(chunk)] = end;
      cover(hits, begin, end);
    });
    INFO("chunks " << chunks);
    CHECK(each_once(hits));
    CHECK(each_once(chunk_runs));
    for (int64_t c = 0; c < chunks; ++c) {
      CHECK(begins[static_cast<size_t>(c)] == n * c / chunks);
      CHECK(ends[static_cast<size_t>(c)] == n * (c + 1) / chunks);
    }
  }
}

TEST_CASE("parallel_for: small loops run on the caller alone, empty loops not at all") {
  const auto caller = std::this_thread::get_id();
  bool other_thread = false;
  cpu::parallel_for(100, 1000, [&](int64_t, int64_t) { other_thread |= std::this_thread::get_id() != caller; });
  CHECK_FALSE(other_thread);
  int calls = 0;
  cpu::parallel_for(0, 1, [&](int64_t, int64_t) { ++calls; });
  CHECK(calls == 0);
}

TEST_CASE("a parallel_for inside a chunk completes (serially) instead of waiting for busy workers") {
  const int64_t outer = 4, inner = 5000;
  std::vector<std::atomic<int>> hits(outer * inner);
  cpu::parallel_chunks(outer, outer, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o)
      cpu::parallel_for(inner, 1, [&](int64_t b, int64_t e) { cover(hits, o * inner + b, o * inner + e); });
  });
  CHECK(each_once(hits));
}

TEST_CASE("several threads calling at once each get all their chunks") {
  constexpr int kCallers = 4, kCalls = 300;
  const int64_t n = 4096;
  std::vector<std::vector<std::atomic<int>>> hits;
  for (int t = 0; t < kCallers; ++t) hits.emplace_back(n * kCalls);
  std::vector<std::thread> callers;
  for (int t = 0; t < kCallers; ++t) {
    callers.emplace_back([&, t] {
      for (int call = 0; call < kCalls; ++call)
        cpu::parallel_for(n, 1, [&](int64_t b, int64_t e) { cover(hits[t], call * n + b, call * n + e); });
    });
  }
  for (auto& c : callers) c.join();
  for (int t = 0; t < kCallers; ++t) CHECK(each_once(hits[t]));
}

TEST_CASE("thousands of calls in a row: no lost wake-up, every chunk counted") {
  std::atomic<int64_t> total{0};
  for (int call = 0; call < 20000; ++call)
    cpu::parallel_chunks(2, 2, [&](int64_t, int64_t b, int64_t e) { total.fetch_add(e - b); });
  CHECK(total.load() == 40000);
}

// While one thread's call is still running (its caller busy in a long chunk), a
// second thread's call must get the free worker: its two chunks run at the
// same time. (When the pool took one call at a time, the second ran its chunks
// one after the other on its own thread, and the first chunk here would wait
// out its timeout alone.)
TEST_CASE("a second thread's call gets the free workers while a first call is still running") {
  if (cpu::num_threads() < 2) {
    MESSAGE("one CPU thread: no worker to share");
    return;
  }
  using Clock = std::chrono::steady_clock;
  std::atomic<bool> a_running{false}, b_done{false};
  std::thread a([&] {
    const std::thread::id a_caller = std::this_thread::get_id();
    cpu::parallel_chunks(2, 2, [&](int64_t, int64_t, int64_t) {
      if (std::this_thread::get_id() != a_caller) return;  // the worker's chunk is short
      a_running = true;
      const auto until = Clock::now() + std::chrono::seconds(10);
      while (!b_done && Clock::now() < until) std::this_thread::yield();
    });
    a_running = true;  // also when the worker took both chunks
  });
  while (!a_running) std::this_thread::yield();
  std::atomic<int> b_started{0};
  std::atomic<bool> b_overlapped{false};
  cpu::parallel_chunks(2, 2, [&](int64_t, int64_t, int64_t) {
    const bool first = b_started++ == 0;
    const auto until = Clock::now() + std::chrono::seconds(5);
    while (b_started < 2 && Clock::now() < until) std::this_thread::yield();
    if (first && b_started == 2) b_overlapped = true;  // the other started while this one ran
  });
  b_done = true;
  a.join();
  CHECK(b_overlapped);
}
