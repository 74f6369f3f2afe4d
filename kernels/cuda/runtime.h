// What the rest of the engine needs from the CUDA runtime: the device
// allocator, whether a GPU is usable, and copies across devices.
// Only compiled when COVIDRATE_HAVE_CUDA.
#pragma once
#include <cstddef>
#include <string>

#include "nn/allocator.h"

namespace covidrate::cuda {

// True if a CUDA device can be used; otherwise *why says what the driver said.
bool device_present(std::string* why);
// The caching allocator of the current device.
Allocator& device_allocator();
// Pinned host memory for copies to and from the GPU (caching_allocator.h).
Allocator& pinned_host_allocator();
// Waits until the context's stream has run everything queued on it.
void synchronize();
// A copy between any two of host/device queued on the compute stream, without
// waiting (nn/tensor.h's copy_bytes waits when the host is involved).
void copy_bytes_async(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);

// Events recorded on the context's stream now, taken from pools: waiting for
// one returns once everything queued before it has run. record_event() is
// for the op profiler (timing; back to its pool through
// elapsed_ms_and_release), record_fence() for DeviceFence (no timing, the
// waiter sleeps; back through release_fence).
void* record_event();
void* record_fence();
void wait_for_event(void* event);
void release_fence(void* event);

// For the op profiler (kernels/op_profile.h): the milliseconds from `start`
// to `stop` (two record_event()s) once `stop` has completed (waits for it),
// which returns both to their pool.
float elapsed_ms_and_release(void* start, void* stop);

}  // namespace covidrate::cuda
