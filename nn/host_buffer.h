// Floats in host memory on their way to or from a device: page-locked (pinned)
// when the device is a GPU, so that copies run at the bus's full speed and the
// driver does not copy them once more through a staging buffer of its own
// (host_staging_allocator in nn/allocator.h). Move-only; the block goes back to
// its allocator's cache when the buffer is destroyed, so a loop that takes a
// buffer per batch pins memory once.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>

#include "nn/allocator.h"

namespace covidrate {

class HostBuffer {
 public:
  HostBuffer() = default;
  HostBuffer(int64_t count, Device device)
      : allocator_(&host_staging_allocator(device)),
        data_(static_cast<float*>(allocator_->allocate(static_cast<size_t>(count) * sizeof(float)))),
        count_(count) {}
  ~HostBuffer() { reset(); }
  HostBuffer(HostBuffer&& other) noexcept
      : allocator_(std::exchange(other.allocator_, nullptr)),
        data_(std::exchange(other.data_, nullptr)),
        count_(std::exchange(other.count_, 0)) {}
  HostBuffer& operator=(HostBuffer&& other) noexcept {
    if (this != &other) {
      reset();
      allocator_ = std::exchange(other.allocator_, nullptr);
      data_ = std::exchange(other.data_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  float* data() { return data_; }
  const float* data() const { return data_; }
  int64_t size() const { return count_; }
  size_t bytes() const { return static_cast<size_t>(count_) * sizeof(float); }

 private:
  void reset() {
    if (data_) allocator_->deallocate(data_, bytes());
    data_ = nullptr;
    count_ = 0;
  }
  Allocator* allocator_ = nullptr;
  float* data_ = nullptr;
  int64_t count_ = 0;
};

}  // namespace covidrate
