#include "kernels/cuda/caching_allocator.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>

#include "kernels/cuda/cuda_common.h"

namespace covidrate::cuda {

namespace {
size_t round_up(size_t bytes, size_t granularity) {
  return (bytes + granularity - 1) / granularity * granularity;
}
double mib(size_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

// cudaMalloc on `device`; nullptr when the device is out of memory, which the
// cache answers by releasing itself and asking once more.
void* device_malloc(int device, size_t size) {
  CUDA_CHECK(cudaSetDevice(device));
  void* ptr = nullptr;
  const cudaError_t err = cudaMalloc(&ptr, size);
  if (err == cudaSuccess) return ptr;
  // A failed cudaMalloc leaves its error as the "last error"; clear it, or the
  // next kernel's launch check would report this allocation instead.
  (void)cudaGetLastError();
  CR_CHECK(err == cudaErrorMemoryAllocation, "CUDA allocator: cudaMalloc of " << size << " bytes ("
                                                 << mib(size) << " MiB) failed: " << cudaGetErrorString(err));
  return nullptr;
}

// Ends the out-of-memory error: what the device has left, to the process and
// to others on the same GPU.
std::string device_memory_report() {
  size_t free_b = 0, total_b = 0;
  const bool have_info = cudaMemGetInfo(&free_b, &total_b) == cudaSuccess;
  (void)cudaGetLastError();
  if (!have_info) return "";
  std::ostringstream os;
  os << "; the device has " << mib(free_b) << " MiB free of " << mib(total_b) << " MiB";
  return os.str();
}
}  // namespace

bool CachingAllocator::releases_smaller_on_miss() {
  const char* v = std::getenv("COVIDRATE_CUDA_RELEASE_ON_MISS");
  return v && std::strcmp(v, "1") == 0;
}

size_t CachingAllocator::rounded_size(size_t bytes) {
  if (bytes <= kLargeThreshold) return round_up(std::max<size_t>(bytes, 1), kSmallGranularity);
  return round_up(bytes, kLargeGranularity);
}

CachingAllocator::CachingAllocator(int device)
    : BlockCache({.device = Device::CUDA,
                  .name = "CUDA",
                  .size_class = &CachingAllocator::rounded_size,
                  .allocate = [device](size_t size) { return device_malloc(device, size); },
                  // cudaFree waits for the device, so blocks still read by
                  // queued kernels are safe to return.
                  .free = [](void* block) { CUDA_CHECK(cudaFree(block)); },
                  .memory_report = &device_memory_report,
                  .release_smaller_on_miss = releases_smaller_on_miss()}) {}

PinnedHostAllocator::PinnedHostAllocator()
    : BlockCache({.device = Device::CPU,
                  .name = "CUDA pinned host",
                  .size_class = &CachingAllocator::rounded_size,
                  .allocate =
                      [](size_t size) -> void* {
                        void* ptr = nullptr;
                        const cudaError_t err = cudaHostAlloc(&ptr, size, cudaHostAllocPortable);
                        if (err == cudaSuccess) return ptr;
                        (void)cudaGetLastError();
                        CR_CHECK(err == cudaErrorMemoryAllocation,
                                 "CUDA pinned host allocator: cudaHostAlloc of " << size << " bytes ("
                                                                                 << mib(size) << " MiB) failed: "
                                                                                 << cudaGetErrorString(err));
                        return nullptr;
                      },
                  .free = [](void* block) { CUDA_CHECK(cudaFreeHost(block)); },
                  .release_smaller_on_miss = false}) {}

}  // namespace covidrate::cuda
