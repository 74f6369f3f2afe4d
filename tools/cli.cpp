#include "tools/cli.h"

#include <cmath>
#include <cstdlib>

#include "nn/error.h"

namespace covidrate::tools {

double parse_number(const std::string& option, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  CR_CHECK(!text.empty() && *end == '\0' && std::isfinite(v), option << " needs a number, got '" << text << "'");
  return v;
}

int64_t parse_positive_int(const std::string& option, const std::string& text) {
  const double v = parse_number(option, text);
  CR_CHECK(v >= 1 && v == std::floor(v) && v < 1e9, option << " needs a positive integer, got '" << text << "'");
  return static_cast<int64_t>(v);
}

DType parse_precision(const std::string& option, const std::string& text) {
  if (text == "f32") return DType::F32;
  if (text == "bf16") return DType::BF16;
  CR_FAIL(option << " must be f32 or bf16, got '" << text << "'");
}

}  // namespace covidrate::tools
