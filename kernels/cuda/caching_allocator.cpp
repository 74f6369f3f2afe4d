#include "kernels/cuda/caching_allocator.h"

#include <algorithm>

#include "kernels/cuda/cuda_common.h"

namespace covidrate::cuda {

namespace {
size_t round_up(size_t bytes, size_t granularity) {
  return (bytes + granularity - 1) / granularity * granularity;
}
double mib(size_t bytes) { return static_cast<double>(bytes) / (1 << 20); }
}  // namespace

size_t CachingAllocator::rounded_size(size_t bytes) {
  if (bytes <= kLargeThreshold) return round_up(std::max<size_t>(bytes, 1), kSmallGranularity);
  return round_up(bytes, kLargeGranularity);
}

void* CachingAllocator::allocate(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.allocations;
  if (bytes == 0) return nullptr;  // empty tensors own no memory, as on the CPU
  CR_CHECK(bytes <= (size_t{1} << 48), "CUDA allocator: request of " << bytes
                                           << " bytes is beyond any GPU (a negative size cast to size_t?)");
  const size_t size = rounded_size(bytes);
  void* ptr = nullptr;
  auto bin = free_blocks_.find(size);
  if (bin != free_blocks_.end() && !bin->second.empty()) {
    ptr = bin->second.back();
    bin->second.pop_back();
  } else {
    ptr = system_allocate(size);
  }
  live_.emplace(ptr, size);
  stats_.in_use += size;
  stats_.peak = std::max(stats_.peak, stats_.in_use);
  return ptr;
}

void* CachingAllocator::system_allocate(size_t size) {
  CUDA_CHECK(cudaSetDevice(device_));
  void* ptr = nullptr;
  cudaError_t err = cudaMalloc(&ptr, size);
  if (err == cudaErrorMemoryAllocation) {
    // A failed cudaMalloc leaves its error as the "last error"; clear it, or the
    // next kernel's launch check would report this allocation instead.
    (void)cudaGetLastError();
    release_cached_locked();
    err = cudaMalloc(&ptr, size);
  }
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    const bool have_info = cudaMemGetInfo(&free_b, &total_b) == cudaSuccess;
    (void)cudaGetLastError();
    std::ostringstream os;
    os << "CUDA allocator: cudaMalloc of " << size << " bytes (" << mib(size) << " MiB) failed: "
       << cudaGetErrorString(err) << "; this process has " << mib(stats_.in_use)
       << " MiB in use and " << mib(stats_.reserved) << " MiB reserved";
    if (have_info) os << "; the device has " << mib(free_b) << " MiB free of " << mib(total_b) << " MiB";
    throw Error(os.str());
  }
  ++stats_.system_allocations;
  stats_.reserved += size;
  return ptr;
}

void CachingAllocator::deallocate(void* ptr, size_t bytes) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  CR_CHECK(it != live_.end(), "CUDA allocator: free of " << ptr << " (" << bytes
                                  << " bytes), which this allocator did not hand out or already freed");
  const size_t size = it->second;
  CR_CHECK(rounded_size(bytes) == size, "CUDA allocator: block " << ptr << " of " << size
                                            << " bytes freed as " << bytes << " bytes");
  live_.erase(it);
  stats_.in_use -= size;
  free_blocks_[size].push_back(ptr);
}

void CachingAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

void CachingAllocator::release_cached_locked() {
  // cudaFree waits for the device, so blocks still read by queued kernels are safe to return.
  for (auto& [size, blocks] : free_blocks_) {
    for (void* p : blocks) {
      CUDA_CHECK(cudaFree(p));
      stats_.reserved -= size;
    }
  }
  free_blocks_.clear();
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak = stats_.in_use;
}

}  // namespace covidrate::cuda
