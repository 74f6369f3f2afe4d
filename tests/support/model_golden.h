// The COVID-Rate golden references (tests/golden/*.safetensors, written once by
// tools/dev/make_model_golden.py with PyTorch 1.13 in float64) and the generator
// both sides draw weights and inputs from, so the files hold no weights.
// test_model checks them on the CPU; tests/cuda/test_model_cuda.cpp checks the
// same references on a GPU (a program of its own, so that without a GPU ctest
// reports it skipped, never passed).
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "model/covidrate_net.h"
#include "nn/tensor.h"

namespace covidrate::test {

// The generator's value of the tensor `name` (a parameter, a BN statistic or
// an input "input.*"), as tools/dev/make_model_golden.py draws it.
Tensor golden_value(const std::string& name, const Shape& shape, DType dtype);
// Loads the golden weights and BN statistics into every tensor of the network.
void load_golden_weights(CovidRateNet& net);
// Disk targets of make_model_golden.py's target_disks(): [n, 1, size, size].
Tensor target_disks(int64_t n, int64_t size, DType dtype);

// The full-width network on `device` against covidrate_full_w100: 512 x 512
// evaluation and a 2 x 64 x 64 training forward.
void check_full_width_golden(Device device);
// Width 0.25 on `device` against covidrate_grad_w025: 2 x 128 x 128 training,
// the hybrid loss, every parameter gradient and BN running statistic.
void check_gradient_golden(Device device);

}  // namespace covidrate::test
