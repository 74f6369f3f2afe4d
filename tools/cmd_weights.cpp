// covidrate weights info FILE [--json]
// covidrate weights convert IN OUT --dtype f16|bf16|f32
//
// What a .safetensors weights file holds, and rewriting it in another dtype:
// training writes f32; the files that ship are f16 (half the size), which
// ParameterStore::load widens back to f32 when a model loads them.
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "nn/json.h"
#include "nn/safetensors.h"
#include "nn/safetensors_convert.h"
#include "tools/cli.h"

namespace covidrate::tools {
namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: covidrate weights info FILE [--json]\n"
               "       covidrate weights convert IN OUT --dtype f16|bf16|f32\n\n"
               "info:    the file's metadata, tensor and parameter counts, dtypes and size.\n"
               "convert: rewrites IN as OUT with every tensor in the given dtype (f16/bf16 round\n"
               "         to nearest even); the metadata is kept and \"converted_from\" records the\n"
               "         original dtype. OUT is written atomically and may be IN.\n");
}

int info(const std::string& path, bool json) {
  const std::map<std::string, Tensor> tensors = safetensors::load(path);
  const std::map<std::string, std::string> metadata = safetensors::load_metadata(path);
  int64_t parameters = 0;
  std::map<std::string, int> tensors_per_dtype;
  for (const auto& [name, t] : tensors) {
    parameters += t.numel();
    ++tensors_per_dtype[to_string(t.dtype())];
  }
  const auto bytes = static_cast<long long>(std::filesystem::file_size(path));

  if (json) {
    std::printf("{\n  \"path\": %s,\n  \"bytes\": %lld,\n  \"tensors\": %zu,\n  \"parameters\": %lld,\n",
                json::quote(path).c_str(), bytes, tensors.size(), static_cast<long long>(parameters));
    std::printf("  \"dtypes\": {");
    const char* separator = "";
    for (const auto& [dtype, count] : tensors_per_dtype) {
      std::printf("%s\"%s\": %d", separator, dtype.c_str(), count);
      separator = ", ";
    }
    std::printf("},\n  \"metadata\": {");
    separator = "";
    for (const auto& [key, value] : metadata) {
      std::printf("%s\n    %s: %s", separator, json::quote(key).c_str(), json::quote(value).c_str());
      separator = ",";
    }
    std::printf("%s}\n}\n", metadata.empty() ? "" : "\n  ");
    return 0;
  }
  std::printf("path:       %s\n", path.c_str());
  std::printf("size:       %lld bytes (%.1f MB)\n", bytes, static_cast<double>(bytes) / 1e6);
  std::printf("tensors:    %zu\n", tensors.size());
  std::printf("parameters: %lld (elements of all tensors, BatchNorm running statistics included)\n",
              static_cast<long long>(parameters));
  std::printf("dtypes:    ");
  for (const auto& [dtype, count] : tensors_per_dtype) std::printf(" %s (%d tensors)", dtype.c_str(), count);
  std::printf("\nmetadata:   %s\n", metadata.empty() ? "(none)" : "");
  for (const auto& [key, value] : metadata) std::printf("  %s: %s\n", key.c_str(), value.c_str());
  return 0;
}

bool parse_target_dtype(const std::string& name, DType& dtype) {
  if (name == "f16") dtype = DType::F16;
  else if (name == "bf16") dtype = DType::BF16;
  else if (name == "f32") dtype = DType::F32;
  else return false;
  return true;
}

}  // namespace

int cmd_weights(int argc, char** argv) {
  std::string action;
  std::vector<std::string> paths;
  bool json = false;
  std::string dtype_name;
  ArgScanner args(argc, argv);
  while (args.next()) {
    if (args.help()) return usage(stdout), 0;
    if (args.is("--json")) json = true;
    else if (args.is("--dtype")) dtype_name = args.value();
    else if (action.empty()) action = args.positional();
    else paths.push_back(args.positional());
  }
  CR_USAGE_CHECK(action == "info" || action == "convert",
                 (action.empty() ? std::string("an action is required") : "unknown action '" + action + "'")
                     << ": info or convert");
  if (action == "info") {
    CR_USAGE_CHECK(paths.size() == 1 && dtype_name.empty(), "weights info takes one FILE and no --dtype");
    return info(paths[0], json);
  }
  // convert
  CR_USAGE_CHECK(paths.size() == 2 && !json, "weights convert takes IN and OUT, and no --json");
  DType dtype{};
  CR_USAGE_CHECK(parse_target_dtype(dtype_name, dtype),
                 "weights convert: --dtype must be f16, bf16 or f32, got '" << dtype_name << "'");
  safetensors::convert_file(paths[0], paths[1], dtype);
  std::printf("%s -> %s (%s, %.1f MB)\n", paths[0].c_str(), paths[1].c_str(), to_string(dtype),
              static_cast<double>(std::filesystem::file_size(paths[1])) / 1e6);
  return 0;
}

}  // namespace covidrate::tools
