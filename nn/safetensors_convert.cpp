#include "nn/safetensors_convert.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "nn/error.h"
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
  const std::map<std::string, Tensor> narrowed = converted(tensors, dtype);
  // Values beyond the new type's range would come out infinite (f16 tops out at
  // 65504): refused, naming the tensor, rather than written as weights that
  // then compute NaN.
  const auto values = [](const Tensor& t) {  // exact: f16, bf16 and f32 all widen to f32 exactly
    const Tensor host = t.to(Device::CPU);
    if (host.dtype() == DType::F64) return host.to_vector_f64();
    const std::vector<float> f = host.dtype() == DType::F32 ? host.to_vector() : host.to(DType::F32).to_vector();
    return std::vector<double>(f.begin(), f.end());
  };
  for (const auto& [name, t] : tensors) {
    const std::vector<double> before = values(t);
    const std::vector<double> after = values(narrowed.at(name));
    int64_t overflow = 0;
    double largest = 0;
    for (size_t i = 0; i < before.size(); ++i)
      if (std::isfinite(before[i]) && !std::isfinite(after[i])) ++overflow, largest = std::max(largest, std::abs(before[i]));
    CR_CHECK(overflow == 0, in << ": " << overflow << " value(s) of '" << name << "' (up to " << largest
                                << ") are beyond the range of " << to_string(dtype)
                                << " and would become infinite; keep a wider dtype");
  }
  save(out, narrowed, metadata);
}

}  // namespace covidrate::safetensors
