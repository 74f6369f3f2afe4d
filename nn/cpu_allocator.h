// The two CPU allocators behind cpu_allocator().
//
// CachingCpuAllocator (the default) keeps freed blocks in free lists by size
// class and hands them out again, through the same BlockCache as the CUDA
// backend's kernels/cuda/caching_allocator.*. Why a CPU needs one: glibc gives large
// freed blocks back to the kernel (mmap'ed chunks, and the top of the heap
// past its trim threshold), so training steps fault their activations in
// again, a page at a time, each page zeroed by the kernel. At width 0.25 the
// second step (bench_network's timed one) took 37 000 minor faults and 90 ms of
// system time; glibc's adaptive thresholds calm down after a few steps, but
// not to zero. Cached blocks stay mapped: no faults after the first step.
//
// MallocCpuAllocator is the thin aligned malloc, chosen with
// COVIDRATE_CPU_ALLOCATOR=malloc: it lets a benchmark show the cache's effect
// in one run, and lets valgrind or AddressSanitizer see every free (the cache
// would hide a use after free behind a block that stays mapped).
#pragma once
#include <cstddef>
#include <mutex>

#include "nn/allocator.h"
#include "nn/block_cache.h"

namespace covidrate {

// The CPU's size classes and aligned_alloc behind a BlockCache, which holds
// the free lists, the stats and the two memory rules.
class CachingCpuAllocator final : public BlockCache {
 public:
  // Every block starts on a 64-byte boundary (a cache line, an AVX-512 vector).
  static constexpr size_t kAlignment = 64;
  // Requests up to kSmallLimit are rounded to kAlignment. Above it, each
  // doubling of size is cut into kClassesPerDoubling classes, so a block
  // wastes at most 1/kClassesPerDoubling of its bytes (1/16: 6.25 %) while
  // tensors of nearby sizes still share a free list.
  static constexpr size_t kSmallLimit = 4096;
  static constexpr size_t kClassesPerDoubling = 16;
  // The size class of a request of `bytes`: the smallest block it can get.
  static size_t size_class(size_t bytes);

  CachingCpuAllocator();
};

// A 64-byte-aligned malloc and free per request, nothing kept.
class MallocCpuAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) override;
  AllocatorStats stats() const override;
  void reset_peak() override;
  Device device() const override { return Device::CPU; }

 private:
  mutable std::mutex mu_;
  AllocatorStats stats_;
};

}  // namespace covidrate
