// The device-independent half of both caching allocators (nn/cpu_allocator.*
// and kernels/cuda/caching_allocator.*): free lists of cached blocks by size,
// the map of blocks handed out, the statistics, and two rules that keep what
// the cache holds near the peak in use. A device supplies only its size
// classes and the calls that get blocks from its system and give them back.
//
// Why the rules: the U-Net allocates level by level, and each level's tensors
// have sizes of their own. A cache that reuses a block only for its own size
// class keeps every level's sizes cached beside the next level's: full-width
// CPU inference at 512 reserved 1.47x its peak in use (1.08x with the rules).
//  (1) A request whose class has no cached block borrows the smallest cached
//      block up to kMaxOversize times its class.
//  (2) A request the cache cannot serve first gives cached blocks smaller than
//      itself back to the system, largest first, up to its own size.
// On the GPU only rule (1) holds by default: cudaMalloc and cudaFree are slow
// and cudaFree waits for the whole device, so rule (2), although it frees only
// on a miss, stalled segment's queue of batches at every new batch shape
// (measured on an H200: kernels/cuda/caching_allocator.h). There, as in
// PyTorch, cached blocks go back only when the device runs out.
#pragma once
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "nn/allocator.h"

namespace covidrate {

// What a device gives the cache. The cache calls these with its lock held:
// they must not call back into it.
struct BlockSource {
  Device device = Device::CPU;
  std::string name;  // "CPU", "CUDA": starts every error message ("CPU allocator: ...")
  // The block size a request of `bytes` (at least 1) gets: at least `bytes`.
  std::function<size_t(size_t bytes)> size_class;
  // A new block of `size` bytes from the system, or nullptr when the device is
  // out of memory (the cache then releases itself and asks once more). Other
  // failures throw.
  std::function<void*(size_t size)> allocate;
  std::function<void(void* block)> free;
  // Appended to the out-of-memory error, e.g. the device's free memory. Optional.
  std::function<std::string()> memory_report = nullptr;
  // Rule (2) on (the default) or off. Off for device memory and pinned host
  // memory: there a free (cudaFree, cudaFreeHost) waits for the whole device,
  // which stalls segment's queue of batches whenever a new batch shape misses
  // the cache. Running out still releases everything and retries.
  bool release_smaller_on_miss = true;
};

class BlockCache : public Allocator {
 public:
  // Rule (1): how many times its class a borrowed block may be.
  static constexpr size_t kMaxOversize = 2;
  // Larger requests are errors: beyond any machine, likely a negative size cast to size_t.
  static constexpr size_t kMaxRequest = size_t{1} << 48;

  explicit BlockCache(BlockSource source);
  // Blocks still handed out belong to tensors that outlive the cache; only the
  // cached ones are its to free.
  ~BlockCache() override;
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  void* allocate(size_t bytes) final;
  void deallocate(void* ptr, size_t bytes) final;
  // in_use and peak count whole blocks (what the tensors really hold);
  // reserved adds the cached free blocks.
  AllocatorStats stats() const final;
  void reset_peak() final;
  // Gives every cached block back, so reserved falls back to in_use.
  void release_cached() final;
  Device device() const final { return source_.device; }

 private:
  using Bins = std::map<size_t, std::vector<void*>>;  // size -> cached blocks, never an empty list

  void* system_allocate(size_t size);  // retried once after releasing the cache
  void release_cached_locked();
  void release_smaller_than(size_t size);         // rule (2)
  size_t free_last_block(Bins::value_type& bin);  // returns the bytes given back

  const BlockSource source_;
  mutable std::mutex mu_;
  Bins free_blocks_;
  std::unordered_map<void*, size_t> live_;  // handed-out block -> its size
  AllocatorStats stats_;
};

}  // namespace covidrate
