// The op profiler (kernels/op_profile.h): every op dispatched while it is on is
// counted once under (op, first input, device), ops inside a timed op are not
// counted again, and nothing is recorded while it is off. (Its GPU path, events
// on the stream, is tested with the CUDA runtime's tests.)
#include <doctest/doctest.h>

#include <string>

#include "kernels/op_profile.h"
#include "kernels/ops.h"
#include "tests/support/test_support.h"

using namespace covidrate;

namespace {
const profile::OpTime* find(const std::vector<profile::OpTime>& rows, const std::string& op) {
  for (const auto& r : rows)
    if (r.op == op) return &r;
  return nullptr;
}
}  // namespace

TEST_CASE("the op profiler counts each dispatched op once, under its name and first input") {
  const Tensor x = test::randn({2, 3, 8, 8}, 1), w = test::randn({4, 3, 3, 3}, 2);
  Tensor y = Tensor::empty({2, 3, 8, 8}), c = Tensor::empty({2, 4, 8, 8});
  profile::set_enabled(true);
  profile::reset();
  for (int i = 0; i < 3; ++i) ops::relu_forward(x, y);
  for (int i = 0; i < 2; ++i) ops::conv2d_forward(x, w, nullptr, ConvParams::same(3), c);
  {
    // An op inside a timed scope is part of that scope's time, not a row of its own.
    const profile::OpScope outer("outer", c);
    ops::sigmoid_forward(x, y);
  }
  profile::set_enabled(false);
  ops::relu_forward(x, y);  // off: not counted

  const std::vector<profile::OpTime> rows = profile::collect();
  CHECK(rows.size() == 3);
  const profile::OpTime* relu = find(rows, "relu_forward");
  const profile::OpTime* conv = find(rows, "conv2d_forward");
  const profile::OpTime* outer = find(rows, "outer");
  REQUIRE(relu);
  REQUIRE(conv);
  REQUIRE(outer);
  CHECK(find(rows, "sigmoid_forward") == nullptr);
  CHECK(relu->calls == 3);
  CHECK(conv->calls == 2);
  CHECK(outer->calls == 1);
  CHECK(relu->input == "[2, 3, 8, 8] f32");
  CHECK(outer->input == "[2, 4, 8, 8] f32");
  CHECK(conv->device == Device::CPU);
  for (const auto& r : rows) CHECK(r.total_ms >= 0);
  for (size_t i = 1; i < rows.size(); ++i) CHECK(rows[i - 1].total_ms >= rows[i].total_ms);  // most time first

  const std::string table = profile::report();
  CHECK(table.find("relu_forward") != std::string::npos);
  CHECK(table.find("per op:") != std::string::npos);
  profile::reset();
  CHECK(profile::collect().empty());
}
