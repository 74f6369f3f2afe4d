// Reading and writing .safetensors files, the format of Hugging Face's
// safetensors library (and so of PyTorch's safetensors.torch.load_file):
//
//   [8 bytes] N, the header size, unsigned little-endian
//   [N bytes] a JSON object: {"<name>": {"dtype": "F32", "shape": [2, 3],
//             "data_offsets": [begin, end]}, ..., "__metadata__": {"key": "value"}}
//             (padded with spaces so the data starts 8-byte aligned)
//   [rest]    the tensors' bytes, row-major little-endian, packed back to back;
//             data_offsets are relative to the start of this part.
//
// Loading is strict: the header must be well-formed JSON with exactly these
// fields, every tensor's byte range must match its shape and dtype, and the
// ranges must tile the data part exactly (no overlap, no gap, no trailing bytes).
// Every failure is a covidrate::Error naming the file and the problem.
#pragma once
#include <map>
#include <string>

#include "nn/tensor.h"

namespace covidrate::safetensors {

// All tensors of the file, as CPU tensors (dtypes F32, F64, BF16, F16; up to 4 dimensions).
std::map<std::string, Tensor> load(const std::string& path);

// The "__metadata__" strings of the file (empty if it has none); reads only the header.
std::map<std::string, std::string> load_metadata(const std::string& path);

// Writes the tensors (any device; copied to the host as needed) and the metadata.
// Atomic: the bytes go to a temporary file in the same folder, which is flushed
// to disk and then renamed over path, so an interrupted save leaves either the
// old file or the new one, never half of one.
void save(const std::string& path, const std::map<std::string, Tensor>& tensors,
          const std::map<std::string, std::string>& metadata = {});

}  // namespace covidrate::safetensors
