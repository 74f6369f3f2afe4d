// Small helpers shared by the subcommands' option parsers.
#pragma once
#include <cstdint>
#include <string>

namespace covidrate::tools {

// A finite number, else covidrate::Error naming the option and the text.
double parse_number(const std::string& option, const std::string& text);
// An integer >= 1, else covidrate::Error naming the option and the text.
int64_t parse_positive_int(const std::string& option, const std::string& text);

}  // namespace covidrate::tools
