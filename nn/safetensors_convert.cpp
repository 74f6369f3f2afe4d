#include "nn/safetensors_convert.h"

#include <set>

#include "nn/safetensors.h"

namespace covidrate::safetensors {

std::map<std::string, Tensor> converted(const std::map<std::string, Tensor>& tensors, DType dtype) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : tensors) out.emplace(name, t.dtype() == dtype ? t : t.to(Device::CPU).to(dtype));
  return out;
}

void convert_file(const std::string& in, const std::string& out, DType dtype) {
  const std::map<std::string, Tensor> tensors = load(in);
  std::map<std::string, std::string> metadata = load_metadata(in);
  std::set<std::string> source_dtypes;  // sorted: the same file always gets the same note
  for (const auto& [name, t] : tensors) source_dtypes.insert(to_string(t.dtype()));
  std::string from;
  for (const std::string& d : source_dtypes) from += (from.empty() ? "" : ",") + d;
  metadata["converted_from"] = from;
  save(out, converted(tensors, dtype), metadata);
}

}  // namespace covidrate::safetensors
