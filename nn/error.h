// Errors: every failure in covidrate is a covidrate::Error whose message names
// the operation (or file) and the values that were wrong.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace covidrate {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace covidrate

// CR_CHECK(cond, "conv2d: input has " << c << " channels") throws covidrate::Error.
#define CR_CHECK(cond, msg)                           \
  do {                                                \
    if (!(cond)) {                                    \
      std::ostringstream cr_check_os_;                \
      cr_check_os_ << msg;                            \
      throw ::covidrate::Error(cr_check_os_.str());   \
    }                                                 \
  } while (0)

#define CR_FAIL(msg) CR_CHECK(false, msg)
