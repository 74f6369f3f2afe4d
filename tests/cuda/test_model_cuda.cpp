// The COVID-Rate golden references of test_model on a GPU (cuDNN in float32
// FMA math: COVIDRATE_TF32 unset), with test_model's tolerances.
#include <doctest/doctest.h>

#include "tests/cuda/require_gpu.h"
#include "tests/support/model_golden.h"

using namespace covidrate;

TEST_CASE("model golden on CUDA: full width, 512 x 512 evaluation and 2 x 64 x 64 training forward") {
  test::check_full_width_golden(Device::CUDA);
}

TEST_CASE("model golden on CUDA: width 0.25, 2 x 128 x 128, hybrid loss and every parameter gradient") {
  test::check_gradient_golden(Device::CUDA);
}
