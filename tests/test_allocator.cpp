// The caching CPU allocator: size classes, reuse of freed blocks, the
// accounting that bench_network and training logs report, and its use from
// several threads at once. The memory rules of the BlockCache it is built on
// are tested in test_block_cache.cpp.
// gpu_check: CPU only (the GPU's fences and pinned buffers are tested in tests/cuda).
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "nn/cpu_allocator.h"
#include "nn/host_buffer.h"
#include "nn/error.h"
#include "nn/tensor.h"

using namespace covidrate;
using Caching = CachingCpuAllocator;

TEST_CASE("size classes hold the request, waste at most 1/16 and are aligned multiples") {
  CHECK(Caching::size_class(0) == 64);
  CHECK(Caching::size_class(1) == 64);
  CHECK(Caching::size_class(64) == 64);
  CHECK(Caching::size_class(65) == 128);
  CHECK(Caching::size_class(4096) == 4096);
  CHECK(Caching::size_class(4097) == 4096 + 256);
  CHECK(Caching::size_class(size_t{1} << 22) == size_t{1} << 22);  // powers of two are exact
  // An 8 x 352 x 352 float activation (3 964 928 bytes) takes the class of
  // 31/8 MiB: 2.5 % more.
  CHECK(Caching::size_class(3964928) == (size_t{31} << 20) / 8);
  for (size_t bytes = 1; bytes < (size_t{1} << 30); bytes = bytes * 3 / 2 + 7) {
    const size_t size = Caching::size_class(bytes);
    CHECK(size >= bytes);
    CHECK(size % Caching::kAlignment == 0);
    if (bytes > Caching::kSmallLimit) CHECK(size - bytes <= bytes / Caching::kClassesPerDoubling);
  }
}

TEST_CASE("a freed block is handed out again to a request of the same class") {
  Caching alloc;
  void* a = alloc.allocate(1000000);
  REQUIRE(a != nullptr);
  CHECK(reinterpret_cast<uintptr_t>(a) % Caching::kAlignment == 0);
  std::memset(a, 1, 1000000);  // the whole request is usable
  alloc.deallocate(a, 1000000);
  void* b = alloc.allocate(1000000 - 100);  // another request in the same class
  CHECK(b == a);
  CHECK(alloc.stats().system_allocations == 1);
  void* c = alloc.allocate(3000000);  // another class: a new block
  CHECK(c != a);
  CHECK(alloc.stats().system_allocations == 2);
  alloc.deallocate(b, 1000000 - 100);
  alloc.deallocate(c, 3000000);
}

TEST_CASE("stats: in_use and peak count size classes, reserved keeps the cache") {
  Caching alloc;
  const size_t s1 = Caching::size_class(5000), s2 = Caching::size_class(70000);
  void* a = alloc.allocate(5000);
  void* b = alloc.allocate(70000);
  AllocatorStats st = alloc.stats();
  CHECK(st.in_use == s1 + s2);
  CHECK(st.peak == s1 + s2);
  CHECK(st.reserved == s1 + s2);
  CHECK(st.allocations == 2);
  CHECK(st.system_allocations == 2);

  alloc.deallocate(b, 70000);
  st = alloc.stats();
  CHECK(st.in_use == s1);
  CHECK(st.peak == s1 + s2);
  CHECK(st.reserved == s1 + s2);  // b is cached, not returned

  alloc.reset_peak();
  CHECK(alloc.stats().peak == s1);

  alloc.release_cached();
  st = alloc.stats();
  CHECK(st.reserved == st.in_use);
  CHECK(st.in_use == s1);
  void* c = alloc.allocate(70000);  // the cache is empty: from the system again
  CHECK(alloc.stats().system_allocations == 3);
  alloc.deallocate(a, 5000);
  alloc.deallocate(c, 70000);
  alloc.release_cached();
  CHECK(alloc.stats().reserved == 0);
  CHECK(alloc.stats().in_use == 0);
}

TEST_CASE("empty requests own no memory") {
  Caching alloc;
  CHECK(alloc.allocate(0) == nullptr);
  alloc.deallocate(nullptr, 0);
  CHECK(alloc.stats().in_use == 0);
  CHECK(alloc.stats().allocations == 1);
  CHECK(alloc.stats().system_allocations == 0);
}

TEST_CASE("bad frees and impossible sizes are errors") {
  Caching alloc;
  void* a = alloc.allocate(256);
  CHECK_THROWS_WITH_AS(alloc.deallocate(a, 100000), doctest::Contains("freed as 100000 bytes"), Error);
  alloc.deallocate(a, 256);
  CHECK_THROWS_WITH_AS(alloc.deallocate(a, 256), doctest::Contains("already freed"), Error);
  int not_ours = 0;
  CHECK_THROWS_WITH_AS(alloc.deallocate(&not_ours, 4), doctest::Contains("did not hand out"), Error);
  CHECK_THROWS_WITH_AS(alloc.allocate(static_cast<size_t>(-8)), doctest::Contains("beyond any machine"),
                       Error);
}

TEST_CASE("threads allocating and freeing at once: no block is handed to two owners") {
  Caching alloc;
  constexpr int kThreads = 4, kRounds = 2000;
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&alloc, &failures, t] {
      std::vector<std::pair<unsigned char*, size_t>> held;
      for (int r = 0; r < kRounds; ++r) {
        const size_t bytes = 64 + static_cast<size_t>((r * 7919 + t * 131) % 20000);
        auto* p = static_cast<unsigned char*>(alloc.allocate(bytes));
        std::memset(p, t + 1, bytes);  // mark it ours; another owner would overwrite it
        held.emplace_back(p, bytes);
        if (held.size() > 8) {  // free the oldest after checking nobody else wrote it
          auto [q, n] = held.front();
          for (size_t i = 0; i < n; i += 97) failures[t] += q[i] != t + 1;
          alloc.deallocate(q, n);
          held.erase(held.begin());
        }
      }
      for (auto [q, n] : held) alloc.deallocate(q, n);
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) CHECK(failures[t] == 0);
  const AllocatorStats st = alloc.stats();
  CHECK(st.in_use == 0);
  CHECK(st.allocations == uint64_t{kThreads} * kRounds);
  CHECK(st.system_allocations < st.allocations / 4);  // most requests were served from the cache
}

TEST_CASE("the malloc allocator counts requests and holds nothing after the frees") {
  MallocCpuAllocator alloc;
  void* a = alloc.allocate(1000);
  CHECK(reinterpret_cast<uintptr_t>(a) % Caching::kAlignment == 0);
  CHECK(alloc.stats().in_use == 1000);
  alloc.deallocate(a, 1000);
  CHECK(alloc.stats().in_use == 0);
  CHECK(alloc.stats().reserved == 0);
  CHECK(alloc.stats().peak == 1000);
  CHECK(alloc.stats().system_allocations == 1);
}

TEST_CASE("tensors of the process allocator reuse each other's memory") {
  Allocator& alloc = cpu_allocator();
  if (std::getenv("COVIDRATE_CPU_ALLOCATOR")) return;  // the malloc escape hatch caches nothing
  const void* first = nullptr;
  {
    Tensor t = Tensor::empty({1, 8, 64, 64});
    first = t.raw();
  }
  const uint64_t before = alloc.stats().system_allocations;
  Tensor u = Tensor::empty({1, 8, 64, 64});
  CHECK(u.raw() == first);
  CHECK(alloc.stats().system_allocations == before);
}

TEST_CASE("on the CPU a queued copy is done on return and a fence has nothing to wait for") {
  HostBuffer from(5, Device::CPU), to(5, Device::CPU);
  for (int i = 0; i < 5; ++i) from.data()[i] = static_cast<float>(i) + 0.5f;
  copy_bytes_async(to.data(), Device::CPU, from.data(), Device::CPU, from.bytes());
  from.data()[0] = -1.f;  // the copy is already made
  const DeviceFence done(Device::CPU);
  done.wait();
  DeviceFence empty;
  empty.wait();
  for (int i = 0; i < 5; ++i) CHECK(to.data()[i] == static_cast<float>(i) + 0.5f);
  if (!cuda_available()) CHECK_THROWS_AS(DeviceFence{Device::CUDA}, Error);
}

TEST_CASE("host buffers for the CPU come from the CPU allocator and give their block back") {
  CHECK(&host_staging_allocator(Device::CPU) == &cpu_allocator());
  Allocator& alloc = cpu_allocator();
  const size_t in_use = alloc.stats().in_use;
  HostBuffer a(1000, Device::CPU);
  REQUIRE(a.data() != nullptr);
  CHECK(a.size() == 1000);
  CHECK(a.bytes() == 4000);
  CHECK(alloc.stats().in_use > in_use);
  a.data()[999] = 3.f;
  HostBuffer b = std::move(a);  // the block moves with it; `a` is empty
  CHECK(a.data() == nullptr);
  CHECK(a.size() == 0);
  CHECK(b.data()[999] == 3.f);
  HostBuffer c(10, Device::CPU);
  c = std::move(b);  // c's own block goes back, b's is now c's
  CHECK(c.size() == 1000);
  CHECK(c.data()[999] == 3.f);
  c = HostBuffer();
  CHECK(alloc.stats().in_use == in_use);
}

