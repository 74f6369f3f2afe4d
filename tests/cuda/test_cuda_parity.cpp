// CPU versus CUDA on every case of the op table (tests/support/op_cases.cpp),
// float32 on both sides, forward and backward:
//   - the same random inputs and upstream gradients on both devices;
//   - every output and gradient within the case's parity_rtol/parity_atol,
//     and free of NaN/Inf;
//   - every tensor a case allocates is a view into a larger buffer whose
//     first and last rows hold a sentinel: a kernel writing outside its
//     output is caught on the spot (on both devices);
//   - activation gradients with accumulate == false start as NaN, so a kernel
//     that reads instead of overwriting shows; parameter gradients and
//     accumulate == true start from the same random values on both devices;
//   - CUDA runs each case twice and must give bit-identical results (no
//     atomics-order or algorithm-choice nondeterminism).
// Skipped (exit 77) without a GPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "tests/cuda/require_gpu.h"
#include "tests/support/op_cases.h"
#include "tests/support/test_support.h"

using namespace covidrate;
using namespace covidrate::test;

namespace {

using Tensors = std::vector<Tensor>;
constexpr float kSentinel = -7777.0f;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Hands out views [1, n+1) of sentinel-filled [n+2, ...] buffers and checks
// afterwards that rows 0 and n+1 still hold the sentinel.
class GuardedAlloc {
 public:
  Alloc alloc() {
    return Alloc{[this](const Shape& s, DType t, Device d) { return make(s, t, d); }};
  }

  // "" if every guard is intact, else which buffer and element was hit.
  std::string violations() const {
    for (size_t b = 0; b < buffers_.size(); ++b) {
      const Buffer& buf = buffers_[b];
      const std::vector<float> v = buf.whole.to_vector();
      const int64_t total = static_cast<int64_t>(v.size());
      for (int64_t i = 0; i < total; ++i) {
        const bool guard = i < buf.row || i >= total - buf.row;
        if (guard && v[static_cast<size_t>(i)] != kSentinel) {
          std::ostringstream os;
          os << "allocation " << b << " " << buf.shape.str() << " on " << to_string(buf.whole.device())
             << ": the guard element ";
          if (i < buf.row)
            os << buf.row - i << " before its start";
          else
            os << i - (total - buf.row) << " after its end";
          os << " was overwritten with " << v[static_cast<size_t>(i)];
          return os.str();
        }
      }
    }
    return "";
  }

 private:
  struct Buffer {
    Tensor whole;
    Shape shape;
    int64_t row = 0;
  };

  Tensor make(const Shape& s, DType t, Device d) {
    CR_CHECK(t == DType::F32, "parity test: cases must allocate f32, asked for " << to_string(t));
    // A rank-0 tensor is guarded as one row of one element.
    std::vector<int64_t> dims = s.rank() > 0 ? s.dims() : std::vector<int64_t>{1};
    const int64_t n = dims[0];
    const int64_t row = n > 0 ? s.numel() / n : 0;
    if (row == 0) return Tensor::empty(s, t, d);  // nothing to write, nothing to guard
    dims[0] = n + 2;
    Tensor whole = Tensor::full(Shape(dims), kSentinel, t, d);
    buffers_.push_back({whole, s, row});
    return whole.slice_batch(1, n + 1).reshape(s);
  }

  std::vector<Buffer> buffers_;
};

Tensor make_input(const OpInput& in, uint64_t seed) {
  switch (in.gen) {
    case Gen::Normal: return randn(in.shape, seed);
    case Gen::Positive: return uniform(in.shape, seed, 0.5, 2.0);
    case Gen::Probability: return uniform(in.shape, seed, 0.05, 0.95);
    case Gen::Binary: return bernoulli(in.shape, seed, 0.5);
  }
  return {};
}

Tensors to_device(const Tensors& ts, Device d) {
  Tensors out;
  for (const Tensor& t : ts) out.push_back(t.defined() ? t.to(d) : Tensor());
  return out;
}

bool differentiable(const OpCase& c, size_t k) {
  return c.output_differentiable.empty() || c.output_differentiable[k];
}

bool bit_identical(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// CHECKs that cuda matches cpu; returns the closeness (<= 1 is a pass).
double compare(const OpCase& c, const std::string& what, const Tensor& cpu, const Tensor& cuda) {
  INFO(what << ": cpu " << cpu.str() << ", cuda " << cuda.str());
  REQUIRE(cpu.shape() == cuda.shape());
  CHECK(count_nonfinite(cpu) == 0);
  CHECK(count_nonfinite(cuda) == 0);
  const double r = closeness(cuda, cpu, c.parity_rtol, c.parity_atol);
  INFO("max |cuda - cpu| / (atol + rtol |cpu|) = " << r << " (rtol " << c.parity_rtol << ", atol "
                                                    << c.parity_atol << ")");
  CHECK(r <= 1.0);
  return r;
}

// Gradient buffers through `alloc`: activations start at NaN when they must be
// overwritten, everything else at the same random values on both devices.
Tensors make_grads(const OpCase& c, const Tensors& cpu_in, bool accumulate, Device d, const Alloc& alloc,
                   uint64_t seed) {
  Tensors grads(c.inputs.size());
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const Role role = c.inputs[i].role;
    if (role == Role::Constant) continue;
    const Shape& s = cpu_in[i].shape();
    grads[i] = alloc.make(s, DType::F32, d);
    if (role == Role::Activation && !accumulate)
      grads[i].fill_(kNaN);
    else
      grads[i].copy_from(randn(s, seed + i));
  }
  return grads;
}

struct Run {
  Tensors out;
  Tensors grads[2];  // accumulate == false, true
};

// Forward and both backward flavours of one case on one device.
Run run_case(const OpCase& c, const Tensors& cpu_in, const Tensors& cpu_dys, Device d, uint64_t seed) {
  const std::string dev = to_string(d);
  const Tensors in = to_device(cpu_in, d);
  Run r;
  GuardedAlloc fwd;
  r.out = c.forward(in, fwd.alloc());
  {
    INFO("forward on " << dev);
    CHECK(fwd.violations() == "");
  }
  if (!c.backward) return r;
  const Tensors dys = to_device(cpu_dys, d);
  for (int acc = 0; acc < 2; ++acc) {
    GuardedAlloc bwd;
    r.grads[acc] = make_grads(c, cpu_in, acc == 1, d, bwd.alloc(), seed);
    c.backward(in, r.out, dys, r.grads[acc], acc == 1, bwd.alloc());
    INFO("backward on " << dev << ", accumulate " << (acc == 1));
    CHECK(bwd.violations() == "");
  }
  return r;
}

void check_case(const OpCase& c, uint64_t seed) {
  Tensors in;
  for (size_t i = 0; i < c.inputs.size(); ++i) in.push_back(make_input(c.inputs[i], seed + 101 * i));

  // Upstream gradients need the output shapes: take them from a CPU forward.
  GuardedAlloc probe;
  const Tensors shapes = c.forward(in, probe.alloc());
  Tensors dys(shapes.size());
  for (size_t k = 0; k < shapes.size(); ++k)
    if (differentiable(c, k)) dys[k] = randn(shapes[k].shape(), seed + 7 + k);

  const Run cpu = run_case(c, in, dys, Device::CPU, seed + 500);
  const Run gpu = run_case(c, in, dys, Device::CUDA, seed + 500);
  const Run again = run_case(c, in, dys, Device::CUDA, seed + 500);

  double worst_fwd = 0, worst_bwd = 0;
  bool deterministic = true;
  REQUIRE(cpu.out.size() == gpu.out.size());
  for (size_t k = 0; k < cpu.out.size(); ++k) {
    worst_fwd = std::max(worst_fwd, compare(c, "output " + std::to_string(k), cpu.out[k], gpu.out[k]));
    deterministic = deterministic && bit_identical(gpu.out[k], again.out[k]);
  }
  if (c.backward) {
    for (int acc = 0; acc < 2; ++acc) {
      for (size_t i = 0; i < c.inputs.size(); ++i) {
        if (!cpu.grads[acc][i].defined()) continue;
        const std::string what = "gradient of input " + std::to_string(i) + ", accumulate " + std::to_string(acc);
        worst_bwd = std::max(worst_bwd, compare(c, what, cpu.grads[acc][i], gpu.grads[acc][i]));
        deterministic = deterministic && bit_identical(gpu.grads[acc][i], again.grads[acc][i]);
      }
    }
  }
  INFO("two CUDA runs of the same case must be bit-identical");
  CHECK(deterministic);
  // One line per case, so a GPU log shows how close each op came to its tolerance.
  std::printf("parity %-34s worst/tolerance: forward %.3g, backward %.3g; %s\n", c.name.c_str(), worst_fwd,
              worst_bwd,
              deterministic ? "deterministic" : "NOT deterministic");
}

}  // namespace

TEST_CASE("CPU and CUDA agree on every op case, forward and backward, float32") {
  const std::vector<OpCase>& cases = op_cases();
  REQUIRE(!cases.empty());
  for (size_t i = 0; i < cases.size(); ++i) {
    SUBCASE(cases[i].name.c_str()) {
      try {
        check_case(cases[i], 2000 + 37 * i);
      } catch (const std::exception& e) {
        FAIL_CHECK(cases[i].name << " threw: " << e.what());
      }
    }
  }
}

// The table's shapes are tiny. At the size of a real layer cuDNN picks other
// algorithms (FFT, Winograd, large workspaces), so check those too. The bound
// on the relative L2 error also proves TF32 stays off by default: TF32 rounds
// inputs to 10 mantissa bits, which leaves ~3e-4; float32 sums in another order
// differ by ~1e-6 (1e-5 at worst, for dw's 32768-term sums added one by one).
TEST_CASE("cuDNN matches the CPU at a COVID-Rate layer size, deterministically, without TF32") {
  struct Layer {
    int64_t cin, size, cout;
    int stride, dilation;
  };
  for (const Layer& l : {Layer{32, 128, 32, 1, 1}, Layer{32, 128, 32, 1, 2}, Layer{16, 128, 32, 2, 1}}) {
    const ConvParams p = ConvParams::same(3, l.stride, l.dilation);
    const Tensor x = randn({2, l.cin, l.size, l.size}, 31);
    const Tensor w = randn({l.cout, l.cin, 3, 3}, 32, DType::F32, 0.1);
    const Tensor b = randn({l.cout}, 33);
    const Shape ys = conv2d_out_shape(x.shape(), w.shape(), p);
    const Tensor dy = randn(ys, 34);
    INFO("input " << x.shape().str() << ", weight " << w.shape().str() << ", stride " << l.stride
                  << ", dilation " << l.dilation);

    // Forward, backward data, backward filter (+ bias) on one device.
    const auto run = [&](Device d) {
      const Tensor xd = x.to(d), wd = w.to(d), bd = b.to(d), dyd = dy.to(d);
      Tensor y = Tensor::empty(ys, DType::F32, d), dx = Tensor::empty(x.shape(), DType::F32, d);
      Tensor dw = Tensor::zeros(w.shape(), DType::F32, d), db = Tensor::zeros(b.shape(), DType::F32, d);
      ops::conv2d_forward(xd, wd, &bd, p, y);
      ops::conv2d_backward_data(dyd, wd, p, dx, false);
      ops::conv2d_backward_filter(dyd, xd, p, dw, &db);
      return Tensors{y, dx, dw, db};
    };
    const Tensors cpu = run(Device::CPU), gpu = run(Device::CUDA), again = run(Device::CUDA);
    const char* names[] = {"y", "dx", "dw", "dbias"};
    for (size_t i = 0; i < cpu.size(); ++i) {
      INFO(names[i]);
      CHECK(count_nonfinite(gpu[i]) == 0);
      CHECK(rel_l2(gpu[i], cpu[i]) < 5e-5);
      CHECK(bit_identical(gpu[i], again[i]));
    }
  }
}
