// Tensor: a shape, an element type, a device and shared storage.
//
// - Up to 4 dimensions, row-major, read as NCHW: a rank-2 [N, C] tensor has the
//   memory layout of [N, C, 1, 1], so n()/c()/h()/w() work for every rank.
// - Copying a Tensor copies the handle (shared storage), never the data.
//   clone() copies data; to(device) is the only way data crosses devices.
// - Contiguous always: views only reshape, they never stride.
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "nn/allocator.h"
#include "nn/device.h"
#include "nn/error.h"

namespace covidrate {

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(const std::vector<int64_t>& dims);

  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[i]; }
  int64_t numel() const;
  // NCHW reading with trailing dimensions of 1.
  int64_t n() const { return rank_ > 0 ? dims_[0] : 1; }
  int64_t c() const { return rank_ > 1 ? dims_[1] : 1; }
  int64_t h() const { return rank_ > 2 ? dims_[2] : 1; }
  int64_t w() const { return rank_ > 3 ? dims_[3] : 1; }
  std::vector<int64_t> dims() const { return {dims_.begin(), dims_.begin() + rank_}; }
  std::string str() const;  // "[2, 3, 4, 5]"
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }

 private:
  std::array<int64_t, 4> dims_{1, 1, 1, 1};
  int rank_ = 0;
};

// A block of bytes on one device, returned to its allocator when the last
// tensor that uses it goes away.
class Storage {
 public:
  Storage(size_t bytes, Allocator& alloc);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return alloc_->device(); }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  Allocator* alloc_ = nullptr;
};

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  // Uninitialized memory (debug builds do not poison it: tests do).
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     Device device = Device::CPU);
  // Host values into a CPU tensor of the given dtype (F32 or F64).
  static Tensor from_vector(const Shape& shape, const std::vector<float>& values,
                            DType dtype = DType::F32);
  static Tensor from_vector(const Shape& shape, const std::vector<double>& values,
                            DType dtype = DType::F64);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t n() const { return shape_.n(); }
  int64_t c() const { return shape_.c(); }
  int64_t h() const { return shape_.h(); }
  int64_t w() const { return shape_.w(); }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_cuda() const { return device_ == Device::CUDA; }
  // "f32[2, 3, 4, 5] cpu"
  std::string str() const;

  // Typed access to the elements (checks the dtype; the pointer may be a device pointer).
  template <class T> T* data();
  template <class T> const T* data() const;
  void* raw() { return static_cast<char*>(storage_->data()) + offset_bytes_; }
  const void* raw() const { return static_cast<const char*>(storage_->data()) + offset_bytes_; }

  // Same storage, new shape with the same element count.
  Tensor reshape(const Shape& shape) const;
  // Rows [begin, end) of dimension 0, sharing storage (used to split batches).
  Tensor slice_batch(int64_t begin, int64_t end) const;
  // A deep copy on the same device.
  Tensor clone() const;
  // A deep copy on another device (or the same handle if already there).
  Tensor to(Device device) const;
  // A CPU copy converted to another dtype: F32 <-> F64, and F32/F64 <-> F16/BF16
  // (narrowing rounds to nearest even, widening is exact; see nn/half.h).
  Tensor to(DType dtype) const;
  // Copies the elements of src (same shape and dtype, any device) into this tensor.
  void copy_from(const Tensor& src);
  // All elements as host floats/doubles (copies from the device if needed).
  std::vector<float> to_vector() const;
  std::vector<double> to_vector_f64() const;
  // Sets every element (CPU or CUDA).
  void fill_(double value);
  bool same_storage(const Tensor& o) const { return storage_ == o.storage_; }

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_bytes_ = 0;
  Shape shape_;
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
};

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };

template <class T> T* Tensor::data() {
  CR_CHECK(defined(), "Tensor::data: tensor is undefined");
  CR_CHECK(dtype_ == dtype_of<T>::value, "Tensor::data: tensor is " << to_string(dtype_)
                                                                     << ", asked for " << to_string(dtype_of<T>::value));
  return static_cast<T*>(raw());
}
template <class T> const T* Tensor::data() const {
  return const_cast<Tensor*>(this)->data<T>();
}

// Bytes between two devices, used by Tensor::to and copy_from (CUDA part lives in kernels/cuda).
// Returns once the bytes are at dst.
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
// The same copy queued behind the work already on the device's stream, returning
// at once: the host side must be pinned memory (HostBuffer, nn/host_buffer.h)
// that stays allocated, and the destination unread, until a DeviceFence
// (nn/device.h) recorded after the call has been waited for. Lets a loop send
// the next batch while the device still computes the last. Between two CPU
// buffers: a plain copy, done on return.
void copy_bytes_async(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);

}  // namespace covidrate
