// covidrate model [--arch NAME] [--width W] [--size S] [--no-cpb] [--no-se] [--json]:
// the size and cost of COVID-Rate or a baseline -- parameters, forward GFLOP per
// slice, and a per-stage table -- without running it.
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "model/segmentation_net.h"

namespace covidrate::tools {
namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: covidrate model [--arch NAME] [--width W] [--size S] [--no-cpb] [--no-se] [--json]\n\n"
               "Builds the network (no weights are read) and prints its trainable\n"
               "parameter count and the forward GFLOP of one S x S slice (2 x multiply-adds of\n"
               "the convolutions and SE layers), then a table per stage.\n"
               "  --arch NAME covid-rate (default), unet, attention-unet or unet++ (the baselines)\n"
               "  --width W   channel multiplier (default 1: COVID-Rate's 14,380,833 parameters)\n"
               "  --size S    slice size, a multiple of 16 (default 512)\n"
               "  --no-cpb    COVID-Rate without context perception boosting\n"
               "  --no-se     COVID-Rate without squeeze-and-excitation\n"
               "  --json      one JSON object instead of the table\n");
}

std::string shape_text(const Shape& s) {
  return std::to_string(s[0]) + " x " + std::to_string(s[1]) + " x " + std::to_string(s[2]);
}

void print_text(const SegmentationNet& net, int64_t size) {
  const double total = net.forward_flops(size, size);
  std::printf("%s\n", describe(net.config()).c_str());
  std::printf("parameters:   %lld\n", static_cast<long long>(net.param_count()));
  std::printf("forward:      %.1f GFLOP per %lld x %lld slice\n\n", total / 1e9,
              static_cast<long long>(size), static_cast<long long>(size));
  std::printf("%-6s  %-18s  %12s  %9s  %6s\n", "stage", "output (C x H x W)", "parameters", "GFLOP", "share");
  for (const auto& row : net.summary(size, size))
    std::printf("%-6s  %-18s  %12lld  %9.2f  %5.1f%%\n", row.name.c_str(), shape_text(row.output).c_str(),
                static_cast<long long>(row.parameters), row.flops / 1e9, 100.0 * row.flops / total);
}

void print_json(const SegmentationNet& net, int64_t size) {
  std::printf("{\"architecture\": \"%s\", \"width\": %.17g, \"cpb\": %s, \"se\": %s, \"size\": %lld, "
              "\"parameters\": %lld, \"gflop\": %.6f, \"stages\": [",
              to_string(net.config().architecture), net.config().width, net.config().cpb ? "true" : "false",
              net.config().se ? "true" : "false", static_cast<long long>(size),
              static_cast<long long>(net.param_count()), net.forward_flops(size, size) / 1e9);
  const auto rows = net.summary(size, size);
  for (size_t i = 0; i < rows.size(); ++i)
    std::printf("%s{\"name\": \"%s\", \"output\": [%lld, %lld, %lld], \"parameters\": %lld, \"gflop\": %.6f}",
                i ? ", " : "", rows[i].name.c_str(), static_cast<long long>(rows[i].output[0]),
                static_cast<long long>(rows[i].output[1]), static_cast<long long>(rows[i].output[2]),
                static_cast<long long>(rows[i].parameters), rows[i].flops / 1e9);
  std::printf("]}\n");
}

// The whole string as a number, or false.
bool parse_number(const char* text, double& value) {
  char* end = nullptr;
  value = std::strtod(text, &end);
  return end != text && *end == '\0';
}

bool known_architecture(const char* text, Architecture& architecture) {
  try {
    architecture = parse_architecture(text);
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

int cmd_model(int argc, char** argv) {
  NetConfig config;
  int64_t size = 512;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    double value = 0;
    if (arg == "--help" || arg == "-h") {
      usage(stdout);
      return 0;
    } else if (arg == "--no-cpb") {
      config.cpb = false;
    } else if (arg == "--no-se") {
      config.se = false;
    } else if (arg == "--arch" && has_value && known_architecture(argv[i + 1], config.architecture)) {
      ++i;
    } else if (arg == "--json") {
      json = true;
    } else if (arg == "--width" && has_value && parse_number(argv[i + 1], value) && value > 0) {
      config.width = value;
      ++i;
    } else if (arg == "--size" && has_value && parse_number(argv[i + 1], value) && value >= 16 &&
               value == static_cast<double>(static_cast<int64_t>(value)) &&
               static_cast<int64_t>(value) % 16 == 0) {
      size = static_cast<int64_t>(value);
      ++i;
    } else {
      const std::string shown = arg == "--arch" && has_value ? arg + " " + argv[i + 1] : arg;
      std::fprintf(stderr, "covidrate model: bad argument '%s'%s\n\n", shown.c_str(),
                   arg == "--arch"    ? " (needs covid-rate, unet, attention-unet or unet++)"
                   : arg == "--width" ? " (needs a positive number)"
                   : arg == "--size" ? " (needs a positive multiple of 16)"
                                     : "");
      usage(stderr);
      return 2;
    }
  }
  if (config.architecture != Architecture::CovidRate && !(config.cpb && config.se)) {
    std::fprintf(stderr, "covidrate model: --no-cpb and --no-se are COVID-Rate's; %s has neither\n",
                 to_string(config.architecture));
    return 2;
  }
  const std::unique_ptr<SegmentationNet> net = make_network(config);
  if (json) print_json(*net, size);
  else print_text(*net, size);
  return 0;
}

}  // namespace covidrate::tools
