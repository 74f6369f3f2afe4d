#include "nn/parameters.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "nn/safetensors.h"

namespace covidrate {

namespace {

constexpr int64_t kAlignElements = 64;

// Shipped weights are stored in f16 or bf16 (half the file); they widen exactly
// to the store's f32/f64. Any other difference of dtype is a mismatch.
bool loadable_as(DType file, DType store) { return file == store || file == DType::F16 || file == DType::BF16; }

int64_t align_up(int64_t n) { return (n + kAlignElements - 1) / kAlignElements * kAlignElements; }

// A view of count elements at offset inside a rank-1 flat buffer, shaped as shape.
Tensor flat_view(const Tensor& flat, int64_t offset, const Shape& shape) {
  return flat.slice_batch(offset, offset + shape.numel()).reshape(shape);
}

}  // namespace

ParameterStore::ParameterStore(DType dtype, uint64_t init_seed) : dtype_(dtype), init_rng_(init_seed) {
  CR_CHECK(dtype == DType::F32 || dtype == DType::F64,
           "ParameterStore: dtype must be f32 or f64, got " << to_string(dtype));
}

void ParameterStore::check_new_name(const std::string& name, const Tensor& initial) const {
  CR_CHECK(!allocated(), "ParameterStore: '" << name << "' registered after allocate()");
  CR_CHECK(!name.empty(), "ParameterStore: empty name");
  for (const auto& p : parameters_)
    CR_CHECK(p.name != name, "ParameterStore: '" << name << "' registered twice");
  for (const auto& b : buffers_)
    CR_CHECK(b.name != name, "ParameterStore: '" << name << "' registered twice");
  CR_CHECK(initial.defined() && initial.device() == Device::CPU && initial.dtype() == dtype_,
           "ParameterStore: initial value of '" << name << "' is " << initial.str() << ", expected a "
                                                << to_string(dtype_) << " CPU tensor");
}

ag::Var ParameterStore::add_parameter(const std::string& name, const Tensor& initial, double l2,
                                      bool trainable) {
  check_new_name(name, initial);
  CR_CHECK(l2 >= 0, "ParameterStore: negative L2 coefficient " << l2 << " for '" << name << "'");
  parameters_.push_back({name, l2, trainable, 0, ag::Var::parameter(initial, Tensor(), trainable)});
  return parameters_.back().var;
}

Tensor& ParameterStore::add_buffer(const std::string& name, const Tensor& initial) {
  check_new_name(name, initial);
  buffers_.push_back({name, 0, initial});
  return buffers_.back().value;
}

void ParameterStore::allocate(Device device) {
  CR_CHECK(!allocated(), "ParameterStore::allocate: already allocated");
  int64_t total = 0;
  for (auto& p : parameters_) {
    p.offset = total;
    total = align_up(total + p.var.value().numel());
  }
  int64_t state_total = 0;
  for (auto& b : buffers_) {
    b.offset = state_total;
    state_total += b.value.numel();
  }
  device_ = device;
  params_ = Tensor::zeros(Shape{total}, dtype_, device);
  state_ = Tensor::zeros(Shape{state_total}, dtype_, device);
  for (auto& p : parameters_) view(params_, p).copy_from(p.var.value());
  for (auto& b : buffers_) flat_view(state_, b.offset, b.value.shape()).copy_from(b.value);
  rebind_views();
}

void ParameterStore::ensure_training_state() {
  CR_CHECK(allocated(), "ParameterStore::ensure_training_state: call allocate() first");
  if (has_training_state()) return;
  const Shape shape = params_.shape();
  grads_ = Tensor::zeros(shape, dtype_, device_);
  m_ = Tensor::zeros(shape, dtype_, device_);
  v_ = Tensor::zeros(shape, dtype_, device_);
  rebind_grads();  // the values did not move: their version stays
}

Tensor& ParameterStore::training_buffer(Tensor& flat) {
  CR_CHECK(has_training_state(), "ParameterStore: no training state (gradients, Adam's moments) yet: "
                                 "ensure_training_state() allocates it");
  return flat;
}

void ParameterStore::to(Device device) {
  CR_CHECK(allocated(), "ParameterStore::to: call allocate() first");
  if (device == device_) return;
  params_ = params_.to(device);
  if (has_training_state()) {
    grads_ = grads_.to(device);
    m_ = m_.to(device);
    v_ = v_.to(device);
  }
  state_ = state_.to(device);
  device_ = device;
  rebind_views();
}

void ParameterStore::rebind_views() {
  ++values_version_;
  for (auto& p : parameters_)
    p.var.rebind_parameter(view(params_, p), has_training_state() ? view(grads_, p) : Tensor());
  for (auto& b : buffers_) b.value = flat_view(state_, b.offset, b.value.shape());
}

void ParameterStore::rebind_grads() {
  for (auto& p : parameters_) p.var.rebind_parameter(p.var.value(), view(grads_, p));
}

Tensor ParameterStore::view(const Tensor& flat, const Parameter& p) const {
  CR_CHECK(allocated(), "ParameterStore::view: call allocate() first");
  return flat_view(flat, p.offset, p.var.value().shape());
}

const ag::Var& ParameterStore::parameter(const std::string& name) const {
  for (const auto& p : parameters_)
    if (p.name == name) return p.var;
  CR_FAIL("ParameterStore: no parameter named '" << name << "'");
}

int64_t ParameterStore::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : parameters_) n += p.var.value().numel();
  return n;
}

void ParameterStore::zero_grad() {
  CR_CHECK(allocated(), "ParameterStore::zero_grad: call allocate() first");
  ensure_training_state();  // zeros already
  grads_.fill_(0.0);
}

std::map<std::string, Tensor> ParameterStore::named_tensors() const {
  std::map<std::string, Tensor> out;
  for (const auto& p : parameters_) out.emplace(p.name, p.var.value());
  for (const auto& b : buffers_) out.emplace(b.name, b.value);
  return out;
}

void ParameterStore::load(const std::map<std::string, Tensor>& tensors, const std::string& source) {
  CR_CHECK(allocated(), "ParameterStore::load: call allocate() first");
  std::map<std::string, Tensor> mine = named_tensors();
  // Gather every problem, so one failed load says everything that is wrong.
  std::vector<std::string> problems;
  for (const auto& [name, t] : mine) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      problems.push_back("missing '" + name + "'");
    } else if (it->second.shape() != t.shape() || !loadable_as(it->second.dtype(), t.dtype())) {
      problems.push_back("'" + name + "' is " + to_string(it->second.dtype()) + it->second.shape().str() +
                         ", the model expects " + to_string(t.dtype()) + t.shape().str());
    }
  }
  for (const auto& [name, t] : tensors)
    if (!mine.count(name)) problems.push_back("unexpected '" + name + "'");
  // A NaN or an infinity in a weight spreads through the network: every
  // probability NaN, read as lesion or not depending on the comparison, with
  // nothing to say that the figures are meaningless.
  // Each tensor in the store's dtype (f16 and bf16 widen exactly), made once:
  // checked here, copied below.
  std::map<std::string, Tensor> converted;
  if (problems.empty()) {
    for (const auto& [name, t] : mine) {
      const Tensor& source_tensor = tensors.at(name);
      Tensor value = source_tensor.dtype() == t.dtype() ? source_tensor : source_tensor.to(t.dtype());
      const Tensor on_host = value.device() == Device::CPU ? value : value.to(Device::CPU);
      const auto non_finite = [&](const auto* v) {
        return std::count_if(v, v + on_host.numel(), [](auto x) { return !std::isfinite(x); });
      };
      const int64_t bad = on_host.dtype() == DType::F64 ? non_finite(on_host.data<double>())
                                                          : non_finite(on_host.data<float>());
      if (bad > 0)
        problems.push_back("'" + name + "' holds " + std::to_string(bad) + " NaN or infinite value" +
                           (bad > 1 ? "s" : "") + " (of " + std::to_string(on_host.numel()) + ")");
      converted.emplace(name, std::move(value));
    }
    if (!problems.empty()) {
      std::ostringstream os;
      os << (source.empty() ? "loading weights" : source) << ": " << problems.front()
         << (problems.size() > 1 ? " (and " + std::to_string(problems.size() - 1) + " more tensor" +
                                       (problems.size() > 2 ? "s)" : ")")
                                 : std::string())
         << "; the weights are damaged, or come from a training run that diverged";
      CR_FAIL(os.str());
    }
  }
  if (!problems.empty()) {
    // The first few say what kind of mismatch it is; a whole list (hundreds
    // for a wrong width) would bury that.
    constexpr size_t kShown = 3;
    std::ostringstream os;
    os << (source.empty() ? "loading weights" : source) << ": " << problems.size() << " tensor"
       << (problems.size() > 1 ? "s do" : " does") << " not match the model: ";
    for (size_t i = 0; i < problems.size() && i < kShown; ++i) os << (i ? "; " : "") << problems[i];
    if (problems.size() > kShown) os << "; and " << problems.size() - kShown << " more";
    throw WeightsMismatch(os.str());
  }
  for (auto& [name, t] : mine) t.copy_from(converted.at(name));
  ++values_version_;
}

void ParameterStore::save(const std::string& path, const std::map<std::string, std::string>& metadata) const {
  safetensors::save(path, named_tensors(), metadata);
}

void ParameterStore::load(const std::string& path) { load(safetensors::load(path), path); }

}  // namespace covidrate
