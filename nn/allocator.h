// Allocators hand out raw bytes on one device and count what they hold.
// Both devices cache freed blocks by size: the CPU in nn/cpu_allocator.*
// (COVIDRATE_CPU_ALLOCATOR=malloc turns its cache off), the CUDA backend in
// kernels/cuda/caching_allocator.*.
#pragma once
#include <cstddef>
#include <cstdint>

#include "nn/device.h"

namespace covidrate {

struct AllocatorStats {
  size_t in_use = 0;     // bytes handed out and not yet returned
  size_t peak = 0;       // high-water mark of in_use
  size_t reserved = 0;   // bytes held from the system (>= in_use for caching allocators)
  uint64_t allocations = 0;  // calls to allocate()
  uint64_t system_allocations = 0;  // calls that reached the system allocator
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr, size_t bytes) = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void reset_peak() = 0;
  // Returns cached blocks to the system (no-op for non-caching allocators).
  virtual void release_cached() {}
  virtual Device device() const = 0;
};

// The process-wide allocator of each device. CUDA throws if the backend is
// not built or no GPU is present.
Allocator& cpu_allocator();
Allocator& allocator_for(Device device);
// Host memory for data on its way to or from `device`: page-locked (pinned) for
// CUDA, so that copies run at the bus's full speed; cpu_allocator() for the CPU.
Allocator& host_staging_allocator(Device device);

}  // namespace covidrate
