// ParameterStore: every weight of a network in one flat buffer.
//
// Modules register their parameters by name ("enc1.unit1.conv1.weight") with
// an initial value, then allocate() lays them out back to back in ONE flat
// buffer. The training state, ONE flat gradient buffer and ONE each for Adam's
// m and v beside it, comes with the first sign of training (an Adam, a
// zero_grad, ensure_training_state): a network loaded only to segment never
// holds it, which at full width is 3 x 57.5 MB it would never read. Each
// parameter is a view into those buffers. Why flat:
//   - zeroing every gradient is one fill, an Adam step is one kernel launch;
//   - moving a model between devices is a copy per flat buffer (values and BN
//     state; with training state also gradients, m and v), not hundreds;
//   - saving and loading reads views, so names stay the interface.
// Non-trainable state (BatchNorm's running mean and variance) lives in a
// separate flat buffer: saved and loaded with the weights, never optimized.
//
// Every parameter starts at a multiple of 64 elements (256 bytes in f32), so
// vectorized GPU kernels can load any parameter with aligned accesses.
#pragma once
#include <deque>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "nn/autograd.h"
#include "nn/error.h"

namespace covidrate {

// The tensors given to ParameterStore::load are not those of the store
// (missing, unexpected, or of another shape): most often the network was built
// with other options than the weights were trained with.
struct WeightsMismatch : Error {
  using Error::Error;
};

class ParameterStore {
 public:
  struct Parameter {
    std::string name;
    double l2 = 0.0;  // Keras l2(lambda): adds lambda * sum(w^2) to the loss
    bool trainable = true;
    int64_t offset = 0;  // elements from the start of the flat buffers
    ag::Var var;         // value and gradient: the initial value until allocated, then views
  };
  struct Buffer {
    std::string name;
    int64_t offset = 0;
    Tensor value;  // the initial value until allocated, then a view of the state buffer
  };

  // dtype: F32 for training, F64 for gradient checks on the CPU. init_seed
  // seeds the generator modules draw their initial weights from.
  explicit ParameterStore(DType dtype = DType::F32, uint64_t init_seed = 0);
  ParameterStore(const ParameterStore&) = delete;
  ParameterStore& operator=(const ParameterStore&) = delete;

  // Registers a parameter (before allocate()). initial: a CPU tensor of the
  // store's dtype. The returned Var keeps working after allocate() and to():
  // the store re-points it at the flat buffers.
  ag::Var add_parameter(const std::string& name, const Tensor& initial, double l2 = 0.0,
                        bool trainable = true);
  // Registers non-trainable state. The returned reference stays valid for the
  // store's lifetime and always holds the current view.
  Tensor& add_buffer(const std::string& name, const Tensor& initial);

  // Lays the values and the non-trainable state out on device.
  void allocate(Device device);
  bool allocated() const { return params_.defined(); }
  // The gradients and Adam's moments, zero, on the store's device (a no-op
  // when they exist). Until then a parameter has no gradient buffer, and a
  // backward pass that reaches one is an Error that says to call this.
  void ensure_training_state();
  bool has_training_state() const { return grads_.defined(); }
  // Moves all buffers to another device; every Var and buffer follows.
  void to(Device device);

  Device device() const { return device_; }
  DType dtype() const { return dtype_; }
  std::mt19937_64& init_rng() { return init_rng_; }
  // Off: the initializers (nn/layers.h) give zeros without drawing, for a
  // network whose every weight is loaded from a file next (load() refuses a
  // file that lacks one). Drawing them took 0.3 s at full width.
  void set_draw_initial_values(bool on) { draw_initial_values_ = on; }
  bool draws_initial_values() const { return draw_initial_values_; }

  const std::deque<Parameter>& parameters() const { return parameters_; }
  const std::deque<Buffer>& buffers() const { return buffers_; }
  const ag::Var& parameter(const std::string& name) const;
  // Elements of all parameters (trainable or not), without alignment padding.
  int64_t parameter_count() const;

  // The flat buffers (padding between parameters holds zeros). The last three
  // are the training state: an Error without it.
  Tensor& flat_values() { return params_; }
  Tensor& flat_grads() { return training_buffer(grads_); }
  Tensor& adam_m() { return training_buffer(m_); }
  Tensor& adam_v() { return training_buffer(v_); }
  // The view of one parameter inside a flat buffer (values, grads, m or v).
  Tensor view(const Tensor& flat, const Parameter& p) const;

  // Zeroes the gradients (allocating the training state first if need be).
  void zero_grad();

  // Parameters and buffers by name (views: copy before changing them).
  std::map<std::string, Tensor> named_tensors() const;
  // Copies every tensor in from `tensors`, which must name exactly the
  // parameters and buffers of this store with their shapes and dtype (or
  // F16/BF16, widened exactly); otherwise throws a WeightsMismatch listing
  // every problem (a NaN or infinite value: a plain Error). source names the
  // origin (a file) in messages.
  void load(const std::map<std::string, Tensor>& tensors, const std::string& source = "");
  // The same through a .safetensors file.
  void save(const std::string& path, const std::map<std::string, std::string>& metadata = {}) const;
  void load(const std::string& path);

  // Advances whenever allocate(), to() or load() replace or move the values.
  // Whatever is derived from them once (a network's inference form: folded,
  // cast weights) records it and, when it has moved on, knows it is stale.
  // Writes into a parameter's tensor by other means do not advance it; the
  // usual one, an optimizer step, runs in training mode, and a network drops
  // its inference form when set to training.
  uint64_t values_version() const { return values_version_; }

 private:
  void check_new_name(const std::string& name, const Tensor& initial) const;
  void rebind_views();
  void rebind_grads();
  Tensor& training_buffer(Tensor& flat);

  DType dtype_;
  Device device_ = Device::CPU;
  std::mt19937_64 init_rng_;
  bool draw_initial_values_ = true;
  std::deque<Parameter> parameters_;  // deque: references stay valid as it grows
  std::deque<Buffer> buffers_;
  Tensor params_, grads_, m_, v_, state_;
  uint64_t values_version_ = 0;
};

}  // namespace covidrate
