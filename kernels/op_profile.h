// Where the time of a forward or a training step goes, op by op, without a
// profiler: with COVIDRATE_PROFILE=1 in the environment (or set_enabled(true))
// every op of kernels/ops.h is timed at its dispatch, the one line in
// kernels/dispatch.cpp that picks the CPU or CUDA twin, and the times add up
// per (op, first input's shape and dtype, device).
//
//   COVIDRATE_PROFILE=1 build/bench_network --benchmark_filter=infer-prepared
//   COVIDRATE_PROFILE=1 covidrate segment STUDY --out DIR     (table on stderr at the end)
//
// CPU ops are timed by the wall clock around the call. CUDA ops by two events
// on the context's stream, so the GPU is not synchronized per op: an op's time
// is from its first kernel's start to its last kernel's end on the stream,
// including any gap while the host was still queueing it (a cuDNN search, a
// copy that waits). Only the outermost op is timed when ops call ops, so the
// rows add up to the time spent inside ops. Off, a scope costs one branch.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "nn/tensor.h"

namespace covidrate::profile {

bool enabled();
void set_enabled(bool on);

// Times one op from construction to destruction (dispatch.cpp's ON_DEVICE).
class OpScope {
 public:
  OpScope(const char* op, const Tensor& first_input) {
    if (enabled()) begin(op, first_input);
  }
  ~OpScope() {
    if (active_) end();
  }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  void begin(const char* op, const Tensor& first_input);
  void end();
  bool active_ = false;
  const char* op_ = nullptr;
  std::string input_;
  Device device_ = Device::CPU;
  double start_s_ = 0;            // CPU: wall clock
  void* start_event_ = nullptr;   // CUDA: event on the stream
};

struct OpTime {
  std::string op;     // "conv2d_forward"
  std::string input;  // the first input: "[16, 128, 512, 512] bf16"
  Device device = Device::CPU;
  int64_t calls = 0;
  double total_ms = 0;
};

// Every (op, input, device) timed since the last reset, most time first. Waits
// for the GPU to finish what was timed there.
std::vector<OpTime> collect();
void reset();
// A table of collect(): op, input, device, calls, total and mean time, and each
// row's share of the timed total; then the totals per op name.
std::string report();

}  // namespace covidrate::profile
