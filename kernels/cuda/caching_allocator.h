// A caching device allocator (the idea of PyTorch's CUDACachingAllocator,
// much simplified). cudaMalloc and cudaFree are slow and cudaFree synchronizes
// the whole device, so freed blocks are kept and handed out again by the
// BlockCache shared with the CPU allocator (nn/block_cache.h: free lists,
// stats, and the two memory rules, with why the GPU wants them too). This file
// holds the device's part: its block sizes, cudaMalloc and cudaFree. Only
// compiled when COVIDRATE_HAVE_CUDA.
//
// Safety of reuse without synchronization: all work of the engine is queued on
// the context's single stream. A block freed by the host may still be read by
// queued kernels, but whoever receives it next can only touch it from work
// queued later on the same stream, which runs after those kernels.
#pragma once
#include <cstddef>

#include "nn/block_cache.h"

namespace covidrate::cuda {

class CachingAllocator final : public BlockCache {
 public:
  // Small requests are rounded to 512 B, large ones (over 1 MiB) to 2 MiB, so
  // that activations of nearby sizes share bins without wasting much.
  static constexpr size_t kSmallGranularity = 512;
  static constexpr size_t kLargeThreshold = 1u << 20;
  static constexpr size_t kLargeGranularity = 2u << 20;
  static size_t rounded_size(size_t bytes);

  // release_cached() is cudaFree of every cached block: it synchronizes the device.
  explicit CachingAllocator(int device);

  // Whether rule (2) of nn/block_cache.h (give smaller cached blocks back on a
  // miss) applies to device memory: off, unless COVIDRATE_CUDA_RELEASE_ON_MISS=1.
  // Measured on an H200 (2026-11-28, docs/benchmarks.md): with it on, segment's
  // warm studies still made 185, 70 and 21 cudaMallocs each, whose cudaFrees
  // stalled the queue of batches (the network phase ran 514 slices/s); with it
  // off 1, 0 and 0 (700 slices/s). As in PyTorch's cache, running out of
  // memory still releases every cached block and retries.
  static bool releases_smaller_on_miss();
};

// Page-locked ("pinned") host memory for the copies between host and device:
// the GPU reads and writes it directly, at the bus's full speed, where pageable
// memory goes through the driver's own staging buffer (about half the speed, and
// a copy on the CPU). cudaHostAlloc is slow (it pins every page), so blocks are
// cached as device blocks are, with the same sizes. The blocks are host memory
// (device() is CPU), pinned for every CUDA context (cudaHostAllocPortable: segment
// fills them on other threads than the one that runs the network). A block goes
// back to the cache only when no copy uses it any more: copy_bytes waits for
// its copy before it returns; after copy_bytes_async the owner keeps the block
// until a DeviceFence recorded after the copy has been waited for (nn/tensor.h).
class PinnedHostAllocator final : public BlockCache {
 public:
  PinnedHostAllocator();
};

}  // namespace covidrate::cuda
