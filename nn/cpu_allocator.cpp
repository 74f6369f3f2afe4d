#include "nn/cpu_allocator.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <string>

#include "nn/error.h"

namespace covidrate {

namespace {
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

CachingCpuAllocator::CachingCpuAllocator()
    : BlockCache({.device = Device::CPU,
                  .name = "CPU",
                  .size_class = &CachingCpuAllocator::size_class,
                  // Classes are multiples of kAlignment, as aligned_alloc wants;
                  // nullptr when out of memory, as the cache wants.
                  .allocate = [](size_t size) { return std::aligned_alloc(kAlignment, size); },
                  .free = [](void* block) { std::free(block); }}) {}

// ------------------------------------------------------------------ malloc allocator
void* MallocCpuAllocator::allocate(size_t bytes) {
  CR_CHECK(bytes <= BlockCache::kMaxRequest, "CPU allocator: request of " << bytes
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
