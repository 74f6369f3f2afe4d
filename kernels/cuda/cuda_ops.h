// The CUDA twins (float32). Only compiled when COVIDRATE_HAVE_CUDA.
#pragma once
#include "kernels/ops.h"

namespace covidrate::cuda {
#include "kernels/op_signatures.inc"
}  // namespace covidrate::cuda
