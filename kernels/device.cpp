// Device availability, per-device allocators and cross-device copies: the only
// place outside kernels/cuda that knows whether the CUDA backend is built.
#include <cstring>
#include <utility>

#include "nn/tensor.h"
#if COVIDRATE_HAVE_CUDA
#include "kernels/cuda/cudnn_conv.h"
#include "kernels/cuda/runtime.h"
#endif

namespace covidrate {

bool cuda_available() {
#if COVIDRATE_HAVE_CUDA
  static const bool present = cuda::device_present(nullptr);
  return present;
#else
  return false;
#endif
}

std::string cuda_unavailable_reason() {
#if COVIDRATE_HAVE_CUDA
  std::string why;
  if (cuda::device_present(&why)) return "";
  return "no usable CUDA device (" + why + ")";
#else
  return "this build of covidrate has no CUDA backend (configure with -DCOVIDRATE_CUDA=ON)";
#endif
}

Allocator& allocator_for(Device device) {
  if (device == Device::CPU) return cpu_allocator();
#if COVIDRATE_HAVE_CUDA
  CR_CHECK(cuda_available(), "cannot allocate on cuda: " << cuda_unavailable_reason());
  return cuda::device_allocator();
#else
  CR_FAIL("cannot allocate on cuda: " << cuda_unavailable_reason());
#endif
}

Allocator& host_staging_allocator(Device device) {
  if (device == Device::CPU) return cpu_allocator();
#if COVIDRATE_HAVE_CUDA
  CR_CHECK(cuda_available(), "cannot stage host memory for cuda: " << cuda_unavailable_reason());
  return cuda::pinned_host_allocator();
#else
  CR_FAIL("cannot stage host memory for cuda: " << cuda_unavailable_reason());
#endif
}

void synchronize(Device device) {
  if (device == Device::CPU) return;
#if COVIDRATE_HAVE_CUDA
  cuda::synchronize();
#else
  CR_FAIL("synchronize cuda: " << cuda_unavailable_reason());
#endif
}

DeviceFence::DeviceFence(Device device) {
  if (device == Device::CPU) return;
#if COVIDRATE_HAVE_CUDA
  CR_CHECK(cuda_available(), "fence on cuda: " << cuda_unavailable_reason());
  event_ = cuda::record_fence();
#else
  CR_FAIL("fence on cuda: " << cuda_unavailable_reason());
#endif
}

DeviceFence::~DeviceFence() {
#if COVIDRATE_HAVE_CUDA
  if (event_) cuda::release_fence(event_);
#endif
}

DeviceFence::DeviceFence(DeviceFence&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}

DeviceFence& DeviceFence::operator=(DeviceFence&& other) noexcept {
  if (this != &other) {
    DeviceFence old(std::move(*this));  // releases this one's event
    event_ = std::exchange(other.event_, nullptr);
  }
  return *this;
}

void DeviceFence::wait() const {
#if COVIDRATE_HAVE_CUDA
  if (event_) cuda::wait_for_event(event_);
#endif
}

uint64_t algorithm_searches(Device device) {
  if (device == Device::CPU) return 0;
#if COVIDRATE_HAVE_CUDA
  return cuda::conv_plan_stats().searches;
#else
  CR_FAIL("algorithm searches on cuda: " << cuda_unavailable_reason());
#endif
}

uint64_t device_system_allocations(Device device) {
  if (device == Device::CPU) return 0;
#if COVIDRATE_HAVE_CUDA
  return cuda::device_allocator().stats().system_allocations + cuda::pinned_host_allocator().stats().system_allocations;
#else
  CR_FAIL("allocations on cuda: " << cuda_unavailable_reason());
#endif
}

void copy_bytes_async(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device == Device::CPU && src_device == Device::CPU) {
    std::memcpy(dst, src, bytes);
    return;
  }
#if COVIDRATE_HAVE_CUDA
  cuda::copy_bytes_async(dst, dst_device, src, src_device, bytes);
#else
  CR_FAIL("copy between " << to_string(src_device) << " and " << to_string(dst_device) << ": "
                          << cuda_unavailable_reason());
#endif
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  copy_bytes_async(dst, dst_device, src, src_device, bytes);
  // With host memory on one side the caller reads or frees it right after
  // return: wait for the copy (and for the kernels queued before it, which
  // produced it). Between two device buffers the stream keeps the order.
  if (bytes != 0 && (dst_device == Device::CPU) != (src_device == Device::CPU)) synchronize(Device::CUDA);
}

}  // namespace covidrate
