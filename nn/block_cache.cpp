#include "nn/block_cache.h"

#include <algorithm>
#include <utility>

#include "nn/error.h"

namespace covidrate {

namespace {
double mib(size_t bytes) { return static_cast<double>(bytes) / (1 << 20); }
}  // namespace

BlockCache::BlockCache(BlockSource source) : source_(std::move(source)) {}

BlockCache::~BlockCache() { release_cached_locked(); }

void* BlockCache::allocate(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.allocations;
  if (bytes == 0) return nullptr;  // empty tensors own no memory
  CR_CHECK(bytes <= kMaxRequest, source_.name << " allocator: request of " << bytes
                                              << " bytes is beyond any machine (a negative size cast to size_t?)");
  const size_t size = source_.size_class(bytes);
  // Rule (1): the smallest cached block that fits, if it is at most
  // kMaxOversize times the class. A block idle in the cache holds its memory
  // anyway, so lending it to a smaller tensor costs nothing the system sees.
  void* ptr = nullptr;
  size_t held = size;
  auto bin = free_blocks_.lower_bound(size);  // no bin is left empty
  if (bin != free_blocks_.end() && bin->first <= size * kMaxOversize) {
    held = bin->first;
    ptr = bin->second.back();  // the most recently freed block: likeliest still in cache
    bin->second.pop_back();
    if (bin->second.empty()) free_blocks_.erase(bin);
  } else {
    if (source_.release_smaller_on_miss) release_smaller_than(size);
    ptr = system_allocate(size);
  }
  live_.emplace(ptr, held);
  stats_.in_use += held;
  stats_.peak = std::max(stats_.peak, stats_.in_use);
  return ptr;
}

void* BlockCache::system_allocate(size_t size) {
  void* ptr = source_.allocate(size);
  if (!ptr) {
    release_cached_locked();
    ptr = source_.allocate(size);
  }
  CR_CHECK(ptr, source_.name << " allocator: out of memory allocating " << size << " bytes (" << mib(size)
                             << " MiB); this process has " << mib(stats_.in_use) << " MiB in use"
                             << (source_.memory_report ? source_.memory_report() : std::string()));
  ++stats_.system_allocations;
  stats_.reserved += size;
  return ptr;
}

void BlockCache::deallocate(void* ptr, size_t bytes) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  // A double free would put one block in the cache twice and hand it to two tensors.
  CR_CHECK(it != live_.end(), source_.name << " allocator: free of " << ptr << " (" << bytes
                                           << " bytes), which this allocator did not hand out or already freed");
  const size_t size = it->second;
  // A borrowed block (rule 1) comes back under the size its tensor asked for.
  const size_t asked = source_.size_class(std::max<size_t>(bytes, 1));
  CR_CHECK(asked <= size && size <= asked * kMaxOversize,
           source_.name << " allocator: block " << ptr << " of " << size << " bytes freed as " << bytes << " bytes");
  live_.erase(it);
  stats_.in_use -= size;
  free_blocks_[size].push_back(ptr);
}

void BlockCache::release_smaller_than(size_t size) {
  // Cached blocks too small for this request go back to the system, largest
  // first, up to the request's size: the system reuses their memory (malloc
  // without page faults) or unmaps it, so what the process holds stays near
  // the peak in use.
  size_t freed = 0;
  auto bin = free_blocks_.lower_bound(size);
  while (freed < size && bin != free_blocks_.begin()) {
    --bin;
    while (freed < size && !bin->second.empty()) freed += free_last_block(*bin);
    if (bin->second.empty()) bin = free_blocks_.erase(bin);
  }
}

size_t BlockCache::free_last_block(Bins::value_type& bin) {
  // Taken off the list before the system call: a free that fails (a sticky
  // CUDA error) must not leave the block there to be freed twice.
  void* block = bin.second.back();
  bin.second.pop_back();
  stats_.reserved -= bin.first;
  source_.free(block);
  return bin.first;
}

void BlockCache::release_cached() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

void BlockCache::release_cached_locked() {
  for (auto bin = free_blocks_.begin(); bin != free_blocks_.end(); bin = free_blocks_.erase(bin)) {
    while (!bin->second.empty()) free_last_block(*bin);
  }
}

AllocatorStats BlockCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void BlockCache::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak = stats_.in_use;
}

}  // namespace covidrate
