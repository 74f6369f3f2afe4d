// Devices and element types.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace covidrate {

enum class Device : uint8_t { CPU, CUDA };
// F32 is the working type; F64 exists on the CPU for gradient checks;
// BF16/F16 are reserved for mixed precision on the GPU.
enum class DType : uint8_t { F32, F64, BF16, F16 };

size_t dtype_size(DType t);
const char* to_string(DType t);
const char* to_string(Device d);

// True when this build has the CUDA backend and a usable GPU is present.
bool cuda_available();
// Why CUDA is not available ("built without CUDA", "no CUDA device: <driver message>").
std::string cuda_unavailable_reason();

// Parses "cpu" / "cuda" (also "gpu"); throws covidrate::Error with a clear
// message for an unknown name or for "cuda" when no GPU can be used.
Device parse_device(const std::string& name);
// The device named by COVIDRATE_DEVICE, else CPU.
Device default_device();

// Waits until `device` has finished the work queued on it (a no-op on the CPU,
// which works synchronously). For timing stages; copies to the host already wait.
void synchronize(Device device);

// A mark in the device's queue of work: constructed with a device, it records
// everything queued on it so far; wait() returns once all of that has run. On
// the CPU, which works synchronously, everything has run already. Move-only;
// its event goes back to a pool when it is destroyed (waited for or not).
class DeviceFence {
 public:
  DeviceFence() = default;
  explicit DeviceFence(Device device);
  ~DeviceFence();
  DeviceFence(DeviceFence&& other) noexcept;
  DeviceFence& operator=(DeviceFence&& other) noexcept;
  DeviceFence(const DeviceFence&) = delete;
  DeviceFence& operator=(const DeviceFence&) = delete;
  void wait() const;

 private:
  void* event_ = nullptr;  // a CUDA event; null on the CPU
};

// How many convolution algorithms the device's backend has chosen in this
// process: on CUDA one per (shape, direction) plan (cudnnFind*Ex times every
// candidate; kernels/cuda/cudnn_conv.cpp), 0 on the CPU, which chooses per call
// without searching. segment reports the count per study: searches in a warm
// study mean a shape changed.
uint64_t algorithm_searches(Device device);

// How many blocks the device's memory cache has taken from the system in this
// process (cudaMalloc plus cudaHostAlloc for its pinned staging; 0 on the CPU,
// whose allocator other threads share). cudaFree and cudaFreeHost wait for the
// whole device, so a warm study of segment should add none: each one is a
// cache miss that may have stalled the queue of batches.
uint64_t device_system_allocations(Device device);

}  // namespace covidrate
