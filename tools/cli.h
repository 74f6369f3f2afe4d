// Small helpers shared by the subcommands' option parsers.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

#include <functional>

#include "model/load_weights.h"
#include "nn/device.h"

namespace covidrate::tools {

// A finite number, else covidrate::Error naming the option and the text.
double parse_number(const std::string& option, const std::string& text);
// An integer >= 1, else covidrate::Error naming the option and the text.
int64_t parse_positive_int(const std::string& option, const std::string& text);
// --precision: "f32" or "bf16", the dtype the network computes in.
DType parse_precision(const std::string& option, const std::string& text);

// The options of every command that runs trained weights (eval, segment,
// pseudo-label): where the network runs, what it computes in, and the
// architecture when the weights' metadata lacks it.
struct NetworkOptions {
  Device device = Device::CPU;
  DType precision = DType::F32;
  ArchitectureOverrides architecture;  // --arch, --width, --size, --no-cpb, --no-se
};
// True when `option` is --device, --precision, --arch, --width, --size, --no-cpb
// or --no-se, read
// into `o` (its value, if it takes one, through `value`); false for any other option.
bool parse_network_option(const std::string& option, const std::function<std::string()>& value, NetworkOptions& o);

// Progress of a long stage on stderr, called with (done, total) slices: the
// rate and the remaining time, in place on a terminal, a line per quarter in a
// log. (0, total) starts the clock. `what` begins each line ("segment study1").
class Progress {
 public:
  explicit Progress(std::string what);
  void operator()(int64_t done, int64_t total);

 private:
  std::string what_;
  bool tty_;
  int64_t quarter_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace covidrate::tools
