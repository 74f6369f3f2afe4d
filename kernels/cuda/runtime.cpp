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
// Events are created once and reused: cudaEventCreate costs microseconds, and
// a profiled forward records two per op. Two kinds, two pools: timing events
// for the op profiler, and fences without timing whose waiter sleeps
// (cudaEventBlockingSync) instead of spinning on a core that segment's CPU
// stages want. Both pools live forever, as the allocators do.
class EventPool {
 public:
  explicit EventPool(unsigned flags) : flags_(flags) {}
  void* record() {
    cudaEvent_t e = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        e = free_.back();
        free_.pop_back();
      }
    }
    if (!e) CUDA_CHECK(cudaEventCreateWithFlags(&e, flags_));
    if (const cudaError_t err = cudaEventRecord(e, context().stream); err != cudaSuccess) {
      release(e);  // back to the pool, not lost
      CUDA_CHECK(err);
    }
    return e;
  }
  void release(void* event) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(static_cast<cudaEvent_t>(event));
  }

 private:
  const unsigned flags_;
  std::mutex mu_;
  std::vector<cudaEvent_t> free_;
};
EventPool& timing_events() {
  static auto* pool = new EventPool(cudaEventDefault);
  return *pool;
}
EventPool& fence_events() {
  static auto* pool = new EventPool(cudaEventDisableTiming | cudaEventBlockingSync);
  return *pool;
}
}  // namespace

void* record_event() { return timing_events().record(); }

void* record_fence() { return fence_events().record(); }

void wait_for_event(void* event) { CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event))); }

void release_fence(void* event) { fence_events().release(event); }

float elapsed_ms_and_release(void* start, void* stop) {
  auto* a = static_cast<cudaEvent_t>(start);
  auto* b = static_cast<cudaEvent_t>(stop);
  float ms = 0;
  cudaError_t err = cudaEventSynchronize(b);
  if (err == cudaSuccess) err = cudaEventElapsedTime(&ms, a, b);
  timing_events().release(a);
  timing_events().release(b);
  CUDA_CHECK(err);
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
