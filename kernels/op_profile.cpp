#include "kernels/op_profile.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>
#include <tuple>

#if COVIDRATE_HAVE_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace covidrate::profile {

namespace {

std::atomic<bool>& flag() {
  static std::atomic<bool> on{[] {
    const char* env = std::getenv("COVIDRATE_PROFILE");
    return env && *env && std::string(env) != "0";
  }()};
  return on;
}

thread_local int t_depth = 0;  // ops of this thread inside an op being timed

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

using Key = std::tuple<std::string, std::string, int>;  // op, input, device

// A CUDA op whose events have not been read yet.
struct Pending {
  Key key;
  void* start;
  void* stop;
};

struct Store {
  std::mutex mu;
  std::map<Key, OpTime> totals;
  std::vector<Pending> pending;
};
Store& store() {
  static auto* s = new Store();  // never destroyed: ops may run in static destructors
  return *s;
}

void add(Store& s, const Key& key, double ms) {
  OpTime& t = s.totals[key];
  if (t.calls == 0) {
    t.op = std::get<0>(key);
    t.input = std::get<1>(key);
    t.device = static_cast<Device>(std::get<2>(key));
  }
  ++t.calls;
  t.total_ms += ms;
}

// Reads the pending events (waits for the GPU); with s.mu held.
void resolve(Store& s) {
#if COVIDRATE_HAVE_CUDA
  for (const Pending& p : s.pending) add(s, p.key, cuda::elapsed_ms_and_release(p.start, p.stop));
#endif
  s.pending.clear();
}

}  // namespace

bool enabled() { return flag().load(std::memory_order_relaxed); }
void set_enabled(bool on) { flag() = on; }

void OpScope::begin(const char* op, const Tensor& first_input) {
  active_ = true;
  if (t_depth++ > 0) {  // inside another timed op: that one's time includes this
    op_ = nullptr;
    return;
  }
  op_ = op;
  input_ = first_input.shape().str() + " " + to_string(first_input.dtype());
  device_ = first_input.device();
#if COVIDRATE_HAVE_CUDA
  if (device_ == Device::CUDA) {
    start_event_ = cuda::record_event();
    return;
  }
#endif
  start_s_ = now_s();
}

void OpScope::end() {
  --t_depth;
  if (!op_) return;
  Key key{op_, input_, static_cast<int>(device_)};
  Store& s = store();
#if COVIDRATE_HAVE_CUDA
  if (device_ == Device::CUDA) {
    void* stop = cuda::record_event();
    std::lock_guard<std::mutex> lock(s.mu);
    s.pending.push_back({std::move(key), start_event_, stop});
    if (s.pending.size() >= 8192) resolve(s);  // bounds the events held; waits for the GPU
    return;
  }
#endif
  const double ms = (now_s() - start_s_) * 1e3;
  std::lock_guard<std::mutex> lock(s.mu);
  add(s, key, ms);
}

std::vector<OpTime> collect() {
  Store& s = store();
  std::lock_guard<std::mutex> lock(s.mu);
  resolve(s);
  std::vector<OpTime> rows;
  for (const auto& [key, t] : s.totals) rows.push_back(t);
  std::stable_sort(rows.begin(), rows.end(), [](const OpTime& a, const OpTime& b) { return a.total_ms > b.total_ms; });
  return rows;
}

void reset() {
  Store& s = store();
  std::lock_guard<std::mutex> lock(s.mu);
  resolve(s);  // returns the events to their pool
  s.totals.clear();
}

std::string report() {
  const std::vector<OpTime> rows = collect();
  double total = 0;
  std::map<std::string, std::pair<int64_t, double>> per_op;
  for (const OpTime& r : rows) {
    total += r.total_ms;
    per_op[r.op].first += r.calls;
    per_op[r.op].second += r.total_ms;
  }
  std::ostringstream os;
  char line[256];
  os << "op profile (COVIDRATE_PROFILE): " << rows.size() << " (op, input) rows, " << total
     << " ms inside ops\n";
  std::snprintf(line, sizeof line, "%-26s %-28s %-5s %8s %11s %10s %6s\n", "op", "first input", "dev", "calls",
                "total ms", "mean us", "share");
  os << line;
  for (const OpTime& r : rows) {
    std::snprintf(line, sizeof line, "%-26s %-28s %-5s %8lld %11.3f %10.1f %5.1f%%\n", r.op.c_str(), r.input.c_str(),
                  to_string(r.device), static_cast<long long>(r.calls), r.total_ms,
                  1e3 * r.total_ms / static_cast<double>(r.calls), total > 0 ? 100 * r.total_ms / total : 0.0);
    os << line;
  }
  std::vector<std::pair<std::string, std::pair<int64_t, double>>> ops(per_op.begin(), per_op.end());
  std::stable_sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) { return a.second.second > b.second.second; });
  os << "per op:\n";
  for (const auto& [op, t] : ops) {
    std::snprintf(line, sizeof line, "%-26s %8lld calls %11.3f ms %5.1f%%\n", op.c_str(),
                  static_cast<long long>(t.first), t.second, total > 0 ? 100 * t.second / total : 0.0);
    os << line;
  }
  return os.str();
}

}  // namespace covidrate::profile
