// Small helpers shared by the subcommands' option parsers.
#pragma once
#include <cstdint>
#include <string>

#include "nn/device.h"

namespace covidrate::tools {

// A finite number, else covidrate::Error naming the option and the text.
double parse_number(const std::string& option, const std::string& text);
// An integer >= 1, else covidrate::Error naming the option and the text.
int64_t parse_positive_int(const std::string& option, const std::string& text);
// --precision: "f32" or "bf16", the dtype the network computes in.
DType parse_precision(const std::string& option, const std::string& text);

}  // namespace covidrate::tools
