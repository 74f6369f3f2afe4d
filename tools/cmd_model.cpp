// covidrate model [--arch NAME] [--width W] [--size S] [--no-cpb] [--no-se] [--json] [--svg FILE]:
// the size and cost of COVID-Rate or a baseline -- parameters, forward GFLOP per
// slice, and a per-stage table -- without running it; --svg draws its
// architecture (model/architecture_svg.h).
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "model/architecture_svg.h"
#include "model/segmentation_net.h"
#include "tools/cli.h"

namespace covidrate::tools {
namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: covidrate model [--arch NAME] [--width W] [--size S] [--no-cpb] [--no-se] [--json]\n"
               "                       [--svg FILE]\n\n"
               "Builds the network (no weights are read) and prints its trainable\n"
               "parameter count and the forward GFLOP of one S x S slice (2 x multiply-adds of\n"
               "the convolutions and SE layers), then a table per stage.\n"
               "  --arch NAME covid-rate (default), unet, attention-unet or unet++ (the baselines)\n"
               "  --width W   channel multiplier (default 1: COVID-Rate's 14,380,833 parameters)\n"
               "  --size S    slice size, a multiple of 16 (default 512)\n"
               "  --no-cpb    COVID-Rate without context perception boosting\n"
               "  --no-se     COVID-Rate without squeeze-and-excitation\n"
               "  --json      one JSON object instead of the table\n"
               "  --svg FILE  also draw the architecture as an SVG picture: every stage with its\n"
               "              output shape, operation, parameters and GFLOP, the main path and\n"
               "              the skip connections (written atomically)\n");
}

// The names and operations are the architectures' own (letters, digits, "_",
// spaces, commas, parentheses): nothing to escape in JSON.
std::string joined(const std::vector<std::string>& parts, const char* separator) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? separator : "") + parts[i];
  return out;
}

void print_text(const SegmentationNet& net, int64_t size) {
  const double total = net.forward_flops(size, size);
  std::printf("%s\n", describe(net.config()).c_str());
  std::printf("parameters:   %lld\n", static_cast<long long>(net.param_count()));
  std::printf("forward:      %.1f GFLOP per %lld x %lld slice\n\n", total / 1e9,
              static_cast<long long>(size), static_cast<long long>(size));
  std::printf("%-6s  %-18s  %12s  %9s  %6s  %s\n", "stage", "output (C x H x W)", "parameters", "GFLOP", "share",
              "reads (main path, then skips)");
  for (const auto& row : net.summary(size, size))
    std::printf("%-6s  %-18s  %12lld  %9.2f  %5.1f%%  %s\n", row.name.c_str(), row.output_text().c_str(),
                static_cast<long long>(row.parameters), row.flops / 1e9, 100.0 * row.flops / total,
                joined(row.inputs, ", ").c_str());
}

void print_json(const SegmentationNet& net, int64_t size) {
  std::printf("{\"architecture\": \"%s\", \"width\": %.17g, \"cpb\": %s, \"se\": %s, \"size\": %lld, "
              "\"parameters\": %lld, \"gflop\": %.6f, \"stages\": [",
              to_string(net.config().architecture), net.config().width, net.config().cpb ? "true" : "false",
              net.config().se ? "true" : "false", static_cast<long long>(size),
              static_cast<long long>(net.param_count()), net.forward_flops(size, size) / 1e9);
  const auto rows = net.summary(size, size);
  for (size_t i = 0; i < rows.size(); ++i)
    std::printf("%s{\"name\": \"%s\", \"output\": [%lld, %lld, %lld], \"parameters\": %lld, \"gflop\": %.6f, "
                "\"inputs\": [\"%s\"], \"operation\": \"%s\"}",
                i ? ", " : "", rows[i].name.c_str(), static_cast<long long>(rows[i].output[0]),
                static_cast<long long>(rows[i].output[1]), static_cast<long long>(rows[i].output[2]),
                static_cast<long long>(rows[i].parameters), rows[i].flops / 1e9,
                joined(rows[i].inputs, "\", \"").c_str(), rows[i].operation.c_str());
  std::printf("]}\n");
}

}  // namespace

int cmd_model(int argc, char** argv) {
  NetConfig config;
  int64_t size = 512;
  bool json = false;
  std::string svg;
  ArgScanner args(argc, argv);
  while (args.next()) {
    if (args.help()) {
      usage(stdout);
      return 0;
    } else if (args.is("--no-cpb")) {
      config.cpb = false;
    } else if (args.is("--no-se")) {
      config.se = false;
    } else if (args.is("--arch")) {
      const std::string name = args.value();
      try {
        config.architecture = parse_architecture(name);
      } catch (const Error& e) {
        throw UsageError(std::string("--arch: ") + e.what());
      }
    } else if (args.is("--json")) {
      json = true;
    } else if (args.is("--svg")) {
      svg = args.value();
    } else if (args.is("--width")) {
      config.width = args.number(1e-3, 4);
    } else if (args.is("--size")) {
      size = args.integer(16, 65536);  // only counted, never allocated
      CR_USAGE_CHECK(size % 16 == 0, "--size must be a multiple of 16, got " << size);
    } else {
      args.unknown();
    }
  }
  CR_USAGE_CHECK(config.architecture == Architecture::CovidRate || (config.cpb && config.se),
                 "--no-cpb and --no-se are COVID-Rate's; " << to_string(config.architecture) << " has neither");
  const std::unique_ptr<SegmentationNet> net = make_network(config);
  if (!svg.empty()) save_architecture_svg(svg, *net, size);  // first: a failure prints no table
  if (json) print_json(*net, size);
  else print_text(*net, size);
  return 0;
}

}  // namespace covidrate::tools
