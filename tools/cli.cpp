#include "tools/cli.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
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

bool parse_network_option(const std::string& option, const std::function<std::string()>& value, NetworkOptions& o) {
  if (option == "--device") {
    o.device = parse_device(value());
  } else if (option == "--precision") {
    o.precision = parse_precision(option, value());
  } else if (option == "--width") {
    o.architecture.width = parse_number(option, value());
  } else if (option == "--size") {
    o.architecture.size = parse_positive_int(option, value());
  } else if (option == "--no-cpb") {
    o.architecture.no_cpb = true;
  } else if (option == "--no-se") {
    o.architecture.no_se = true;
  } else if (option == "--arch") {
    o.architecture.architecture = parse_architecture(value());
  } else {
    return false;
  }
  return true;
}

Progress::Progress(std::string what) : what_(std::move(what)), tty_(::isatty(::fileno(stderr))) {}

void Progress::operator()(int64_t done, int64_t total) {
  if (done == 0) {
    start_ = std::chrono::steady_clock::now();
    quarter_ = 0;
    return;
  }
  if (total < 2) return;  // one picture: nothing to wait for
  if (!tty_) {
    if (done * 4 / total == quarter_) return;
    quarter_ = done * 4 / total;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = static_cast<double>(done) / std::max(s, 1e-9);
  std::fprintf(stderr, "%s%s: %lld/%lld slices, %.1f slices/s, ETA %.0f s   %s", tty_ ? "\r" : "", what_.c_str(),
               static_cast<long long>(done), static_cast<long long>(total), rate,
               static_cast<double>(total - done) / rate, tty_ && done < total ? "" : "\n");
}

DType parse_precision(const std::string& option, const std::string& text) {
  if (text == "f32") return DType::F32;
  if (text == "bf16") return DType::BF16;
  CR_FAIL(option << " must be f32 or bf16, got '" << text << "'");
}

}  // namespace covidrate::tools
