// The CUDA twins (float32; the inference forwards also bf16). Only compiled when COVIDRATE_HAVE_CUDA.
#pragma once
#include "kernels/ops.h"

namespace covidrate::cuda {
#include "kernels/op_signatures.inc"
}  // namespace covidrate::cuda
