// What the rest of the engine asks of the CUDA runtime (kernels/cuda/runtime.h).
#include "kernels/cuda/runtime.h"

#include <mutex>
#include <vector>

#include "kernels/cuda/caching_allocator.h"
#include "kernels/cuda/cuda_common.h"

namespace covidrate::cuda {

bool device_present(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // do not leave the error for the next launch check
    if (why) *why = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err);
    return false;
  }
  if (count == 0) {
    if (why) *why = "cudaGetDeviceCount found no device";
    return false;
  }
  return true;
}

Allocator& device_allocator() {
  // One allocator per device, never destroyed: tensors in static storage may
  // be freed after main returns, and must still find their allocator.
  static std::mutex mu;
  static std::vector<CachingAllocator*> allocators;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mu);
  if (static_cast<size_t>(device) >= allocators.size()) allocators.resize(device + 1, nullptr);
  if (!allocators[device]) allocators[device] = new CachingAllocator(device);
  return *allocators[device];
}

Allocator& pinned_host_allocator() {
  static PinnedHostAllocator* allocator = new PinnedHostAllocator();  // never destroyed, as above
  return *allocator;
}

void synchronize() { CUDA_CHECK(cudaStreamSynchronize(context().stream)); }

namespace {
// Created once and reused: cudaEventCreate costs microseconds, and a profiled
// forward records two events per op.
std::mutex event_mu;
std::vector<cudaEvent_t>& free_events() {
  static auto* events = new std::vector<cudaEvent_t>();  // never destroyed, as the allocators
  return *events;
}
}  // namespace

void* record_event() {
  cudaEvent_t e = nullptr;
  {
    std::lock_guard<std::mutex> lock(event_mu);
    if (!free_events().empty()) {
      e = free_events().back();
      free_events().pop_back();
    }
  }
  if (!e) CUDA_CHECK(cudaEventCreate(&e));
  CUDA_CHECK(cudaEventRecord(e, context().stream));
  return e;
}

void wait_for_event(void* event) { CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event))); }

void release_event(void* event) {
  std::lock_guard<std::mutex> lock(event_mu);
  free_events().push_back(static_cast<cudaEvent_t>(event));
}

float elapsed_ms_and_release(void* start, void* stop) {
  auto* a = static_cast<cudaEvent_t>(start);
  auto* b = static_cast<cudaEvent_t>(stop);
  CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  std::lock_guard<std::mutex> lock(event_mu);
  free_events().push_back(a);
  free_events().push_back(b);
  return ms;
}

void copy_bytes_async(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  Context& ctx = context();
  // cudaMemcpyDefault lets unified addressing tell host from device pointers.
  const cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, ctx.stream);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    CR_FAIL("CUDA error: cudaMemcpyAsync of " << bytes << " bytes from " << to_string(src_device)
                                              << " " << src << " to " << to_string(dst_device) << " "
                                              << dst << " failed: " << cudaGetErrorString(err));
  }
}

}  // namespace covidrate::cuda
