// Rewriting a .safetensors file in another floating dtype, e.g. f32 training
// output to the f16 files that ship (half the size; ParameterStore::load
// widens them back). Used by `covidrate weights convert` and its tests.
#pragma once
#include <map>
#include <string>

#include "nn/tensor.h"

namespace covidrate::safetensors {

// The tensors converted to dtype (narrowing rounds to nearest even; see nn/half.h).
std::map<std::string, Tensor> converted(const std::map<std::string, Tensor>& tensors, DType dtype);

// Reads `in`, converts every tensor to dtype, keeps the metadata and adds
// "converted_from": the input's dtypes ("f32"; "f16,f32" for a mixed file).
// Written atomically through safetensors::save, so out may equal in.
void convert_file(const std::string& in, const std::string& out, DType dtype);

}  // namespace covidrate::safetensors
