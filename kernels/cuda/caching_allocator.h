// A caching device allocator (the idea of PyTorch's CUDACachingAllocator,
// much simplified). cudaMalloc and cudaFree are slow and cudaFree synchronizes
// the whole device, so freed blocks are kept in bins by rounded size and handed
// out again. Only compiled when COVIDRATE_HAVE_CUDA.
//
// Safety of reuse without synchronization: all work of the engine is queued on
// the context's single stream. A block freed by the host may still be read by
// queued kernels, but whoever receives it next can only touch it from work
// queued later on the same stream, which runs after those kernels.
#pragma once
#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "nn/allocator.h"

namespace covidrate::cuda {

class CachingAllocator final : public Allocator {
 public:
  // Small requests are rounded to 512 B, large ones (over 1 MiB) to 2 MiB, so
  // that activations of nearby sizes share bins without wasting much.
  static constexpr size_t kSmallGranularity = 512;
  static constexpr size_t kLargeThreshold = 1u << 20;
  static constexpr size_t kLargeGranularity = 2u << 20;
  static size_t rounded_size(size_t bytes);

  explicit CachingAllocator(int device) : device_(device) {}
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) override;
  AllocatorStats stats() const override;
  void reset_peak() override;
  // cudaFree of every cached block (synchronizes the device).
  void release_cached() override;
  Device device() const override { return Device::CUDA; }

 private:
  void* system_allocate(size_t rounded);  // cudaMalloc, retried once after releasing the cache
  void release_cached_locked();

  int device_;
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_blocks_;  // rounded size -> cached blocks
  std::unordered_map<void*, size_t> live_;            // handed-out block -> rounded size
  AllocatorStats stats_;
};

}  // namespace covidrate::cuda
