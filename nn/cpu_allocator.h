// The two CPU allocators behind cpu_allocator().
//
// CachingCpuAllocator (the default) keeps freed blocks in free lists by size
// class and hands them out again, in the spirit of the CUDA backend's
// kernels/cuda/caching_allocator.*. Why a CPU needs one: glibc gives large
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
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "nn/allocator.h"

namespace covidrate {

class CachingCpuAllocator final : public Allocator {
 public:
  // Every block starts on a 64-byte boundary (a cache line, an AVX-512 vector).
  static constexpr size_t kAlignment = 64;
  // Requests up to kSmallLimit are rounded to kAlignment. Above it, each
  // doubling of size is cut into kClassesPerDoubling classes, so a block
  // wastes at most 1/kClassesPerDoubling of its bytes (1/16: 6.25 %) while
  // tensors of nearby sizes still share a free list.
  static constexpr size_t kSmallLimit = 4096;
  static constexpr size_t kClassesPerDoubling = 16;
  // A request whose class has no cached block takes the smallest cached block
  // up to kMaxOversize times its class; failing that, it frees cached blocks
  // smaller than itself before asking the system (see release_smaller_than).
  static constexpr size_t kMaxOversize = 2;
  // The size class of a request of `bytes`: the smallest block it can get.
  static size_t size_class(size_t bytes);

  CachingCpuAllocator() = default;
  ~CachingCpuAllocator() override;
  CachingCpuAllocator(const CachingCpuAllocator&) = delete;
  CachingCpuAllocator& operator=(const CachingCpuAllocator&) = delete;

  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) override;
  // in_use and peak count whole blocks (what the tensors really hold);
  // reserved adds the cached free blocks.
  AllocatorStats stats() const override;
  void reset_peak() override;
  // Frees every cached block, so reserved falls back to in_use.
  void release_cached() override;
  Device device() const override { return Device::CPU; }

 private:
  void* system_allocate(size_t size);  // aligned_alloc, retried once after releasing the cache
  void release_cached_locked();
  void release_smaller_than(size_t size);  // frees up to size bytes of smaller cached blocks

  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_blocks_;  // size -> cached blocks, never an empty list
  std::unordered_map<void*, size_t> live_;            // handed-out block -> its size
  AllocatorStats stats_;
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
