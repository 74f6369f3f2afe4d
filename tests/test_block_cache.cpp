// The block cache behind both caching allocators, on a fake system that
// records every block it hands out and gets back: the two memory rules, the
// retry after running out of memory, and the checks on frees. (The CPU
// allocator's own size classes and threads are in test_allocator.cpp.)
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "nn/block_cache.h"
#include "nn/error.h"

using namespace covidrate;

namespace {

constexpr size_t kUnit = 1024;  // the fake device's classes: multiples of 1 KiB

// Hands out distinct addresses (never touched: the cache only files them) up
// to a capacity, and keeps the sizes of the blocks given back, in order.
struct FakeSystem {
  size_t capacity = SIZE_MAX;
  size_t held = 0;
  uintptr_t next_address = 0x10000;
  std::unordered_map<void*, size_t> blocks;
  std::vector<size_t> given_back;

  BlockSource source() {
    return {.device = Device::CPU,
            .name = "TEST",
            .size_class = [](size_t bytes) { return (bytes + kUnit - 1) / kUnit * kUnit; },
            .allocate = [this](size_t size) -> void* {
              if (held + size > capacity) return nullptr;
              void* p = reinterpret_cast<void*>(next_address);
              next_address += size;
              blocks.emplace(p, size);
              held += size;
              return p;
            },
            .free = [this](void* p) {
              auto it = blocks.find(p);
              CHECK_MESSAGE(it != blocks.end(), "the cache gave back a block it did not get, or twice");
              if (it == blocks.end()) return;
              given_back.push_back(it->second);
              held -= it->second;
              blocks.erase(it);
            },
            .memory_report = [] { return std::string("; the fake has no more"); }};
  }
};

}  // namespace

TEST_CASE("rule 1: an empty class borrows the smallest cached block up to twice its size") {
  FakeSystem system;
  BlockCache cache(system.source());
  void* three = cache.allocate(3 * kUnit);
  void* two = cache.allocate(2 * kUnit);
  void* five = cache.allocate(5 * kUnit);
  cache.deallocate(three, 3 * kUnit);
  cache.deallocate(two, 2 * kUnit);
  cache.deallocate(five, 5 * kUnit);

  void* a = cache.allocate(1500);  // class 2 KiB: its own bin has a block
  CHECK(a == two);
  void* b = cache.allocate(kUnit + 1);  // class 2 KiB, now empty: borrows 3 KiB, the smallest that fits
  CHECK(b == three);
  CHECK(cache.stats().in_use == 5 * kUnit);  // the whole borrowed block counts
  void* c = cache.allocate(2 * kUnit);  // 5 KiB is more than twice 2 KiB: a new block
  CHECK(c != five);
  CHECK(cache.stats().system_allocations == 4);

  cache.deallocate(b, kUnit + 1);  // freed under the size it asked for
  CHECK(cache.stats().in_use == 4 * kUnit);
  CHECK(cache.allocate(3 * kUnit) == three);  // back in its own bin
  CHECK(system.given_back.empty());  // every request above was a hit or found nothing smaller
}

TEST_CASE("rule 2: a miss first gives smaller cached blocks back, largest first, up to its size") {
  FakeSystem system;
  BlockCache cache(system.source());
  std::vector<std::pair<void*, size_t>> blocks;
  for (size_t units : {1, 1, 3, 20}) {
    blocks.emplace_back(cache.allocate(units * kUnit), units * kUnit);
  }
  for (auto [p, n] : blocks) cache.deallocate(p, n);
  CHECK(cache.stats().reserved == 25 * kUnit);

  cache.allocate(4 * kUnit);  // nothing cached in [4, 8] KiB
  // 3 KiB, then one 1 KiB block make 4 KiB: the other 1 KiB block and the
  // 20 KiB one, larger than the request, stay cached.
  CHECK(system.given_back == std::vector<size_t>{3 * kUnit, kUnit});
  CHECK(cache.stats().reserved == (1 + 20 + 4) * kUnit);
  CHECK(system.held == cache.stats().reserved);
}

TEST_CASE("rule 2 off (pinned host memory): a miss keeps the smaller cached blocks; running out still frees them") {
  FakeSystem system;
  system.capacity = 12 * kUnit;
  BlockSource source = system.source();
  source.release_smaller_on_miss = false;
  BlockCache cache(source);
  void* one = cache.allocate(kUnit);
  void* three = cache.allocate(3 * kUnit);
  cache.deallocate(one, kUnit);
  cache.deallocate(three, 3 * kUnit);
  void* four = cache.allocate(4 * kUnit);  // a miss: with the rule on, 3 and 1 KiB would go back
  CHECK(system.given_back.empty());
  CHECK(cache.stats().reserved == 8 * kUnit);
  CHECK(cache.allocate(3 * kUnit) == three);  // still there for its own class
  void* five = cache.allocate(5 * kUnit);  // 4 + 3 + 1 + 5 > 12: out of memory, the cache gives back, retries
  REQUIRE(five != nullptr);
  CHECK(system.given_back == std::vector<size_t>{kUnit});
  cache.deallocate(four, 4 * kUnit);
  cache.deallocate(three, 3 * kUnit);
  cache.deallocate(five, 5 * kUnit);
}

TEST_CASE("out of memory: the cache gives everything back and asks once more, then fails clearly") {
  FakeSystem system;
  system.capacity = 10 * kUnit;
  BlockCache cache(system.source());
  void* big = cache.allocate(9 * kUnit);
  cache.deallocate(big, 9 * kUnit);  // cached, larger than the next request: rule 2 keeps it
  void* four = cache.allocate(3 * kUnit + 1);  // 4 KiB class; 9 KiB is > 2x: a miss, and 13 KiB > capacity
  REQUIRE(four != nullptr);
  CHECK(system.given_back == std::vector<size_t>{9 * kUnit});
  CHECK(cache.stats().reserved == 4 * kUnit);

  CHECK_THROWS_WITH_AS(cache.allocate(7 * kUnit),
                       "TEST allocator: out of memory allocating 7168 bytes (0.00683594 MiB); "
                       "this process has 0.00390625 MiB in use; the fake has no more",
                       Error);
  CHECK(cache.stats().in_use == 4 * kUnit);  // the failure changed nothing held
  cache.deallocate(four, 3 * kUnit + 1);
}

TEST_CASE("frees of blocks the cache did not hand out, or under a wrong size, are errors") {
  FakeSystem system;
  BlockCache cache(system.source());
  void* a = cache.allocate(3 * kUnit);
  CHECK_THROWS_WITH_AS(cache.deallocate(a, 4 * kUnit), doctest::Contains("TEST allocator: block"), Error);
  // A 3 KiB block is more than twice the 1 KiB class: it cannot have been lent to that request.
  CHECK_THROWS_WITH_AS(cache.deallocate(a, kUnit), doctest::Contains("freed as 1024 bytes"), Error);
  cache.deallocate(a, 2 * kUnit);  // within twice the 2 KiB class: a borrowed block
  CHECK_THROWS_WITH_AS(cache.deallocate(a, 2 * kUnit), doctest::Contains("already freed"), Error);
  int not_ours = 0;
  CHECK_THROWS_WITH_AS(cache.deallocate(&not_ours, 4), doctest::Contains("did not hand out"), Error);
  CHECK_THROWS_WITH_AS(cache.allocate(BlockCache::kMaxRequest + 1), doctest::Contains("beyond any machine"),
                       Error);
}

TEST_CASE("the cache gives its cached blocks back when destroyed, and leaves live ones alone") {
  FakeSystem system;
  void* live = nullptr;
  {
    BlockCache cache(system.source());
    void* cached = cache.allocate(kUnit);
    live = cache.allocate(2 * kUnit);
    cache.deallocate(cached, kUnit);
    CHECK(cache.device() == Device::CPU);
  }
  CHECK(system.given_back == std::vector<size_t>{kUnit});
  CHECK(system.blocks.count(live) == 1);
}
