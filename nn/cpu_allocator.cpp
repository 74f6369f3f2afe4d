#include "nn/cpu_allocator.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <string>

#include "nn/error.h"

namespace covidrate {

namespace {
constexpr size_t kMaxRequest = size_t{1} << 48;  // beyond any machine: a negative size cast to size_t?

size_t round_up(size_t bytes, size_t granularity) {
  return (bytes + granularity - 1) / granularity * granularity;
}
double mib(size_t bytes) { return static_cast<double>(bytes) / (1 << 20); }
}  // namespace

// ------------------------------------------------------------------ caching allocator
size_t CachingCpuAllocator::size_class(size_t bytes) {
  if (bytes <= kSmallLimit) return round_up(std::max<size_t>(bytes, 1), kAlignment);
  // Classes between 2^k and 2^(k+1) are 2^k / kClassesPerDoubling apart.
  const int k = std::bit_width(bytes) - 1;
  return round_up(bytes, (size_t{1} << k) / kClassesPerDoubling);
}

CachingCpuAllocator::~CachingCpuAllocator() {
  // Blocks still handed out belong to tensors that outlive this allocator;
  // only the cache is ours to free.
  release_cached_locked();
}

void* CachingCpuAllocator::allocate(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.allocations;
  if (bytes == 0) return nullptr;  // empty tensors own no memory
  CR_CHECK(bytes <= kMaxRequest, "CPU allocator: request of " << bytes
                                     << " bytes is beyond any machine (a negative size cast to size_t?)");
  const size_t size = size_class(bytes);
  // The smallest cached block that fits, if it is at most kMaxOversize times
  // the class: a block idle in the cache holds its pages anyway, so lending it
  // to a smaller tensor costs nothing the system sees.
  void* ptr = nullptr;
  size_t held = size;
  auto bin = free_blocks_.lower_bound(size);  // no bin is left empty
  if (bin != free_blocks_.end() && bin->first <= size * kMaxOversize) {
    held = bin->first;
    ptr = bin->second.back();  // the most recently freed block: likeliest still in cache
    bin->second.pop_back();
    if (bin->second.empty()) free_blocks_.erase(bin);
  } else {
    release_smaller_than(size);
    ptr = system_allocate(size);
  }
  live_.emplace(ptr, held);
  stats_.in_use += held;
  stats_.peak = std::max(stats_.peak, stats_.in_use);
  return ptr;
}

void* CachingCpuAllocator::system_allocate(size_t size) {
  void* ptr = std::aligned_alloc(kAlignment, size);  // size is a multiple of kAlignment
  if (!ptr) {
    release_cached_locked();
    ptr = std::aligned_alloc(kAlignment, size);
  }
  CR_CHECK(ptr, "CPU allocator: out of memory allocating " << size << " bytes (" << mib(size)
                    << " MiB); this process has " << mib(stats_.in_use) << " MiB in use");
  ++stats_.system_allocations;
  stats_.reserved += size;
  return ptr;
}

void CachingCpuAllocator::deallocate(void* ptr, size_t bytes) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  // A double free would put one block in the cache twice and hand it to two tensors.
  CR_CHECK(it != live_.end(), "CPU allocator: free of " << ptr << " (" << bytes
                                  << " bytes), which this allocator did not hand out or already freed");
  const size_t size = it->second;
  CR_CHECK(size_class(bytes) <= size && size <= size_class(bytes) * kMaxOversize,
           "CPU allocator: block " << ptr << " of " << size << " bytes freed as " << bytes << " bytes");
  live_.erase(it);
  stats_.in_use -= size;
  free_blocks_[size].push_back(ptr);
}

void CachingCpuAllocator::release_smaller_than(size_t size) {
  // Cached blocks too small for this request go back to malloc, largest first,
  // up to the request's size: malloc reuses their memory or unmaps it, so the
  // resident set stays near the peak in use. Without this, each level of the
  // U-Net kept its own sizes cached while the next level took new memory:
  // full-width inference at 512 reserved 1.47x its peak in use. A steady
  // training loop misses rarely, and malloc serves those misses from what was
  // freed here, without page faults.
  size_t freed = 0;
  auto bin = free_blocks_.lower_bound(size);
  while (freed < size && bin != free_blocks_.begin()) {
    --bin;
    auto& blocks = bin->second;
    while (freed < size && !blocks.empty()) {
      std::free(blocks.back());
      blocks.pop_back();
      freed += bin->first;
      stats_.reserved -= bin->first;
    }
    if (blocks.empty()) bin = free_blocks_.erase(bin);
  }
}

void CachingCpuAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

void CachingCpuAllocator::release_cached_locked() {
  for (auto& [size, blocks] : free_blocks_) {
    for (void* p : blocks) std::free(p);
    stats_.reserved -= size * blocks.size();
  }
  free_blocks_.clear();
}

AllocatorStats CachingCpuAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingCpuAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak = stats_.in_use;
}

// ------------------------------------------------------------------ malloc allocator
void* MallocCpuAllocator::allocate(size_t bytes) {
  CR_CHECK(bytes <= kMaxRequest, "CPU allocator: request of " << bytes
                                     << " bytes is beyond any machine (a negative size cast to size_t?)");
  // aligned_alloc needs a multiple of the alignment.
  const size_t rounded = round_up(bytes, CachingCpuAllocator::kAlignment);
  void* p = rounded ? std::aligned_alloc(CachingCpuAllocator::kAlignment, rounded) : nullptr;
  CR_CHECK(p || rounded == 0, "CPU allocator: out of memory allocating " << bytes << " bytes ("
                                  << mib(bytes) << " MiB)");
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.allocations;
  if (p) ++stats_.system_allocations;
  stats_.in_use += bytes;
  stats_.reserved += bytes;
  stats_.peak = std::max(stats_.peak, stats_.in_use);
  return p;
}

void MallocCpuAllocator::deallocate(void* ptr, size_t bytes) {
  if (!ptr) return;
  std::free(ptr);
  std::lock_guard<std::mutex> lock(mu_);
  stats_.in_use -= bytes;
  stats_.reserved -= bytes;
}

AllocatorStats MallocCpuAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void MallocCpuAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak = stats_.in_use;
}

// ------------------------------------------------------------------ the process's allocator
namespace {
Allocator* make_cpu_allocator() {
  const char* env = std::getenv("COVIDRATE_CPU_ALLOCATOR");
  const std::string choice = env ? env : "";
  if (choice.empty() || choice == "caching") return new CachingCpuAllocator();
  if (choice == "malloc") return new MallocCpuAllocator();
  throw Error("COVIDRATE_CPU_ALLOCATOR: expected 'caching' (the default) or 'malloc', got '" +
              choice + "'");
}
}  // namespace

Allocator& cpu_allocator() {
  // Never destroyed: tensors in other static objects may be freed after main
  // returns, and must still find their allocator.
  static Allocator* const alloc = make_cpu_allocator();
  return *alloc;
}

}  // namespace covidrate
