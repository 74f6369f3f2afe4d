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
// cudaMemcpy between any two of host/device (synchronous with the compute stream).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);

// For the op profiler (kernels/op_profile.h): an event recorded on the
// context's stream now (taken from a pool), and the milliseconds from `start`
// to `stop` once `stop` has completed (waits for it), which returns both to
// the pool.
void* record_timing_event();
float elapsed_ms_and_release(void* start, void* stop);

}  // namespace covidrate::cuda
