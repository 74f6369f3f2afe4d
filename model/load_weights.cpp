#include "model/load_weights.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "nn/error.h"

namespace covidrate {

namespace {

double metadata_number(const std::string& path, const char* key, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  CR_CHECK(!text.empty() && *end == '\0' && std::isfinite(v),
           path << " metadata '" << key << "' is not a number: '" << text << "'");
  return v;
}

}  // namespace

ModelSpec resolve_model_spec(const std::string& weights_path, const std::map<std::string, std::string>& metadata,
                             const ArchitectureOverrides& overrides) {
  ModelSpec spec;
  auto recorded = [&](const char* key) -> const std::string* {
    auto it = metadata.find(key);
    return it == metadata.end() ? nullptr : &it->second;
  };
  if (overrides.architecture) {
    spec.config.architecture = *overrides.architecture;
  } else if (const std::string* a = recorded("architecture")) {
    try {
      spec.config.architecture = parse_architecture(*a);
    } catch (const Error& e) {
      CR_FAIL(weights_path << " metadata 'architecture': " << e.what());
    }
  }
  if (overrides.width) {
    spec.config.width = *overrides.width;
  } else if (const std::string* w = recorded("width")) {
    spec.config.width = metadata_number(weights_path, "width", *w);
  }
  if (overrides.no_cpb) {
    spec.config.cpb = false;
  } else if (const std::string* c = recorded("cpb")) {
    spec.config.cpb = *c != "0";
  }
  if (overrides.no_se) {
    spec.config.se = false;
  } else if (const std::string* e = recorded("se")) {
    spec.config.se = *e != "0";
  }
  if (overrides.size) {
    spec.size = *overrides.size;
  } else if (const std::string* s = recorded("size")) {
    const double v = metadata_number(weights_path, "size", *s);
    CR_CHECK(v >= 16 && v == std::floor(v) && v < 1e6, weights_path << " metadata 'size' is not a valid side: " << *s);
    spec.size = static_cast<int64_t>(v);
  }
  CR_CHECK(spec.size > 0 && spec.size % 16 == 0, "--size must be a multiple of 16, got " << spec.size);
  return spec;
}

void check_whole_slice_weights(const std::string& weights_path, const std::map<std::string, std::string>& metadata,
                               const std::string& command) {
  const auto it = metadata.find("lungs");
  CR_CHECK(it == metadata.end() || it->second != "1",
           command << ": " << weights_path << " was trained on the lungs alone (train --lungs), and " << command
                   << " feeds whole slices; use weights trained without --lungs (eval takes these)");
}

std::unique_ptr<SegmentationNet> load_for_inference(const std::string& weights_path, const ModelSpec& spec,
                                                 Device device, DType compute) {
  CR_CHECK(std::filesystem::is_regular_file(weights_path), "weights file " << weights_path << " not found");
  // load() below replaces every weight (and refuses a file that lacks one).
  NetConfig config = spec.config;
  config.draw_initial_weights = false;
  std::unique_ptr<SegmentationNet> net = make_network(config);
  try {
    net->parameters().load(weights_path);
  } catch (const WeightsMismatch& e) {
    // Most often an option that contradicts the file (--width, --arch, ...);
    // other problems (a damaged file, NaN) pass through as they are.
    CR_FAIL(e.what() << ". The network asked for is " << to_string(spec.config.architecture) << " at width "
                     << spec.config.width << (spec.config.cpb ? "" : ", without CPB")
                     << (spec.config.se ? "" : ", without SE")
                     << "; --arch, --width, --no-cpb and --no-se must match how the weights were trained, or be "
                        "left out to use what the file records ('covidrate weights info "
                     << weights_path << "' shows it)");
  }
  net->parameters().to(device);
  net->set_training(false);
  net->prepare_inference(compute);
  return net;
}

}  // namespace covidrate
