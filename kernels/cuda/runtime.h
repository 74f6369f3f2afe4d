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

// An event recorded on the context's stream now (taken from a pool); waiting
// for it returns once everything queued before it has run. Each recorded
// event goes back to the pool through exactly one of the release calls.
void* record_event();
void wait_for_event(void* event);
void release_event(void* event);

// For the op profiler (kernels/op_profile.h): the milliseconds from `start`
// to `stop` (two record_event()s) once `stop` has completed (waits for it),
// which returns both to the pool.
float elapsed_ms_and_release(void* start, void* stop);

}  // namespace covidrate::cuda
