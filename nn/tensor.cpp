#include "nn/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "kernels/ops.h"
#include "nn/half.h"

namespace covidrate {

// ------------------------------------------------------------------ dtypes, devices
size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::BF16: return 2;
    case DType::F16: return 2;
  }
  return 0;
}
const char* to_string(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
  }
  return "?";
}
const char* to_string(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  if (name == "cuda" || name == "gpu") {
    CR_CHECK(cuda_available(), "device '" << name << "' was asked for but " << cuda_unavailable_reason());
    return Device::CUDA;
  }
  CR_FAIL("unknown device '" << name << "' (expected cpu or cuda)");
}
Device default_device() {
  const char* env = std::getenv("COVIDRATE_DEVICE");
  if (!env || !*env) return Device::CPU;
  const std::string name = env;
  CR_CHECK(name == "cpu" || name == "cuda" || name == "gpu",
           "COVIDRATE_DEVICE is '" << name << "', an unknown device (cpu or cuda)");
  return parse_device(name);
}

// ------------------------------------------------------------------ shape
Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::vector<int64_t>(dims)) {}
Shape::Shape(const std::vector<int64_t>& dims) {
  CR_CHECK(dims.size() <= 4, "Shape: at most 4 dimensions, got " << dims.size());
  rank_ = static_cast<int>(dims.size());
  for (int i = 0; i < rank_; ++i) {
    CR_CHECK(dims[i] >= 0, "Shape: negative dimension " << dims[i]);
    dims_[i] = dims[i];
  }
}
int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[i];
  return n;
}
std::string Shape::str() const {
  std::ostringstream os;
  os << "[";
  for (int i = 0; i < rank_; ++i) os << (i ? ", " : "") << dims_[i];
  os << "]";
  return os.str();
}
bool Shape::operator==(const Shape& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[i] != o.dims_[i]) return false;
  return true;
}

// ------------------------------------------------------------------ storage
Storage::Storage(size_t bytes, Allocator& alloc) : bytes_(bytes), alloc_(&alloc) {
  ptr_ = alloc.allocate(bytes);
}
Storage::~Storage() { alloc_->deallocate(ptr_, bytes_); }

// ------------------------------------------------------------------ tensor
Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = std::make_shared<Storage>(t.nbytes(), allocator_for(device));
  return t;
}
Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}
Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}
Tensor Tensor::from_vector(const Shape& shape, const std::vector<float>& values, DType dtype) {
  CR_CHECK(static_cast<int64_t>(values.size()) == shape.numel(),
           "Tensor::from_vector: " << values.size() << " values for shape " << shape.str());
  Tensor t = empty(shape, dtype, Device::CPU);
  if (dtype == DType::F32) {
    std::memcpy(t.raw(), values.data(), t.nbytes());
  } else {
    CR_CHECK(dtype == DType::F64, "Tensor::from_vector: unsupported dtype " << to_string(dtype));
    double* d = t.data<double>();
    for (size_t i = 0; i < values.size(); ++i) d[i] = values[i];
  }
  return t;
}
Tensor Tensor::from_vector(const Shape& shape, const std::vector<double>& values, DType dtype) {
  CR_CHECK(static_cast<int64_t>(values.size()) == shape.numel(),
           "Tensor::from_vector: " << values.size() << " values for shape " << shape.str());
  Tensor t = empty(shape, dtype, Device::CPU);
  if (dtype == DType::F64) {
    std::memcpy(t.raw(), values.data(), t.nbytes());
  } else {
    CR_CHECK(dtype == DType::F32, "Tensor::from_vector: unsupported dtype " << to_string(dtype));
    float* f = t.data<float>();
    for (size_t i = 0; i < values.size(); ++i) f[i] = static_cast<float>(values[i]);
  }
  return t;
}

std::string Tensor::str() const {
  if (!defined()) return "undefined";
  std::ostringstream os;
  os << to_string(dtype_) << shape_.str() << " " << to_string(device_);
  return os.str();
}

Tensor Tensor::reshape(const Shape& shape) const {
  CR_CHECK(shape.numel() == numel(),
           "Tensor::reshape: cannot view " << shape_.str() << " as " << shape.str());
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::slice_batch(int64_t begin, int64_t end) const {
  CR_CHECK(shape_.rank() >= 1 && 0 <= begin && begin <= end && end <= n(),
           "Tensor::slice_batch: rows [" << begin << ", " << end << ") of " << shape_.str());
  std::vector<int64_t> dims = shape_.dims();
  int64_t row = numel() / std::max<int64_t>(n(), 1);
  dims[0] = end - begin;
  Tensor t = *this;
  t.shape_ = Shape(dims);
  t.offset_bytes_ += static_cast<size_t>(begin * row) * dtype_size(dtype_);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device_);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(Device device) const {
  if (device == device_) return *this;
  Tensor t = empty(shape_, dtype_, device);
  t.copy_from(*this);
  return t;
}

namespace {

bool is_16_bit(DType t) { return t == DType::F16 || t == DType::BF16; }
uint16_t narrow_to_16_bits(float x, DType t) { return t == DType::F16 ? float_to_half_bits(x) : float_to_bf16_bits(x); }
float widen_from_16_bits(uint16_t bits, DType t) {
  return t == DType::F16 ? half_bits_to_float(bits) : bf16_bits_to_float(bits);
}

}  // namespace

Tensor Tensor::to(DType dtype) const {
  CR_CHECK(device_ == Device::CPU, "Tensor::to(dtype): only CPU tensors convert, this is " << str());
  if (dtype == dtype_) return clone();
  Tensor t = empty(shape_, dtype, Device::CPU);
  const int64_t count = numel();
  if (dtype_ == DType::F32 && dtype == DType::F64) {
    const float* s = data<float>();
    double* d = t.data<double>();
    for (int64_t i = 0; i < count; ++i) d[i] = s[i];
  } else if (dtype_ == DType::F64 && dtype == DType::F32) {
    const double* s = data<double>();
    float* d = t.data<float>();
    for (int64_t i = 0; i < count; ++i) d[i] = static_cast<float>(s[i]);
  } else if (is_16_bit(dtype) && (dtype_ == DType::F32 || dtype_ == DType::F64)) {
    uint16_t* d = static_cast<uint16_t*>(t.raw());
    if (dtype_ == DType::F32) {
      const float* s = data<float>();
      for (int64_t i = 0; i < count; ++i) d[i] = narrow_to_16_bits(s[i], dtype);
    } else {  // f64 rounds once: through an f32 rounded to odd (nn/half.h)
      const double* s = data<double>();
      for (int64_t i = 0; i < count; ++i) d[i] = narrow_to_16_bits(double_to_float_round_to_odd(s[i]), dtype);
    }
  } else if (is_16_bit(dtype_) && (dtype == DType::F32 || dtype == DType::F64)) {
    const uint16_t* s = static_cast<const uint16_t*>(raw());
    if (dtype == DType::F32) {
      float* d = t.data<float>();
      for (int64_t i = 0; i < count; ++i) d[i] = widen_from_16_bits(s[i], dtype_);
    } else {
      double* d = t.data<double>();
      for (int64_t i = 0; i < count; ++i) d[i] = widen_from_16_bits(s[i], dtype_);
    }
  } else if (is_16_bit(dtype_) && is_16_bit(dtype)) {
    return to(DType::F32).to(dtype);  // the widening is exact, so this rounds once
  } else {
    CR_FAIL("Tensor::to: no conversion from " << to_string(dtype_) << " to " << to_string(dtype));
  }
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  CR_CHECK(shape_ == src.shape_ && dtype_ == src.dtype_,
           "Tensor::copy_from: destination " << str() << " differs from source " << src.str());
  copy_bytes(raw(), device_, src.raw(), src.device_, nbytes());
}

std::vector<float> Tensor::to_vector() const {
  Tensor host = to(Device::CPU);
  if (dtype_ == DType::F64) host = host.to(DType::F32);
  CR_CHECK(host.dtype() == DType::F32, "Tensor::to_vector: unsupported dtype " << to_string(dtype_));
  const float* p = host.data<float>();
  return {p, p + numel()};
}

std::vector<double> Tensor::to_vector_f64() const {
  Tensor host = to(Device::CPU);
  if (dtype_ == DType::F32) host = host.to(DType::F64);
  CR_CHECK(host.dtype() == DType::F64, "Tensor::to_vector_f64: unsupported dtype " << to_string(dtype_));
  const double* p = host.data<double>();
  return {p, p + numel()};
}

void Tensor::fill_(double value) { ops::fill(*this, value); }

}  // namespace covidrate
