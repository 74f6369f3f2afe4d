// The CPU twins: plain loops, the reference for every op. Templated on float
// and double inside each .cpp; these entry points pick the type from the tensor.
#pragma once
#include "kernels/ops.h"

namespace covidrate::cpu {
#include "kernels/op_signatures.inc"
}  // namespace covidrate::cpu
