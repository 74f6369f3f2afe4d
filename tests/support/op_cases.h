// One table of op test cases (after ggml's test-backend-ops). The same table
// drives
//   - tests/test_op_gradients.cpp: finite-difference gradient checks in double
//     precision on the CPU, plus the overwrite/accumulate contract;
//   - tests/cuda/test_cuda_parity.cpp: CPU versus CUDA, forward and backward,
//     float32, with NaN/Inf checks and guard values around every output; and
//     for the inference ops (bf16 == true) the forward again in bfloat16, CUDA
//     versus the CPU reference.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "nn/tensor.h"

namespace covidrate::test {

// How an input is drawn, and whether (and how) it receives a gradient.
enum class Gen { Normal, Positive, Probability, Binary };
enum class Role {
  Activation,  // gets a gradient that overwrites or accumulates (the accumulate flag)
  Parameter,   // gets a gradient that always accumulates
  Constant     // no gradient (targets, running statistics)
};
struct OpInput {
  Shape shape;
  Gen gen = Gen::Normal;
  Role role = Role::Activation;
};

// Allocates outputs and gradient buffers for the cases. In the parity test it
// hands out guarded tensors (a larger poisoned allocation around a view) and
// verifies the guards afterwards; elsewhere it returns NaN-filled tensors so
// unwritten outputs show.
struct Alloc {
  std::function<Tensor(const Shape&, DType, Device)> make;
  Tensor operator()(const Shape& s, const Tensor& like) const { return make(s, like.dtype(), like.device()); }
};

struct OpCase {
  std::string name;
  std::vector<OpInput> inputs;
  // Runs the op; returns its outputs (allocated through alloc, same device/dtype as inputs).
  std::function<std::vector<Tensor>(const std::vector<Tensor>& in, const Alloc& alloc)> forward;
  // Runs the backward given the upstream gradients dys (one per forward output).
  // grads[i] is preallocated by the harness for each input whose role is not
  // Constant (undefined otherwise); the case writes into it following the
  // contract of kernels/ops.h with the given accumulate flag.
  // Null for ops without a backward (the optimizer).
  std::function<void(const std::vector<Tensor>& in, const std::vector<Tensor>& out,
                     const std::vector<Tensor>& dys, std::vector<Tensor>& grads, bool accumulate,
                     const Alloc& alloc)>
      backward;
  // Outputs that are not differentiable outputs (saved statistics) get no dy.
  std::vector<bool> output_differentiable;  // empty: all
  double grad_rtol = 1e-5;    // analytic vs central differences, in float64
  double grad_eps = 1e-6;     // finite-difference step
  double parity_rtol = 1e-4;  // CPU vs CUDA, float32
  double parity_atol = 1e-5;
  // The forward also runs on bf16 tensors (inference ops). CUDA passes when, per
  // element, |cuda - cpu| <= bf16_ulps * ulp(cpu) + bf16_scale_ulps * ulp(max |cpu|),
  // ulps of bf16 (2^-7 relative), max over that output: the second term is for
  // values that come out of cancellation, whose own ulp says nothing of the error.
  bool bf16 = false;
  double bf16_ulps = 0;
  double bf16_scale_ulps = 0;
};

// Every case, in a fixed order. Shapes are small enough for the whole table to
// run in seconds on the CPU.
const std::vector<OpCase>& op_cases();

}  // namespace covidrate::test
