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
// The cases marked bf16 (the inference ops) run their forward once more on
// bf16 tensors: CUDA against the CPU reference (f32 op on the bf16 values,
// rounded once), within the case's tolerance in bf16 ulps, with the same
// guards, NaN/Inf and determinism checks.
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

#include "kernels/cuda/conv_direct.h"
#include "kernels/ops.h"
#include "tests/cuda/require_gpu.h"
#include "tests/support/op_cases.h"
#include "tests/support/test_support.h"

using namespace covidrate;
using namespace covidrate::test;

namespace {

using Tensors = std::vector<Tensor>;
constexpr float kSentinel = -7680.0f;  // exact in f32 and bf16 (-1.875 * 2^12)
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
      const std::vector<float> v = buf.whole.to(Device::CPU).to(DType::F32).to_vector();
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
    CR_CHECK(t == DType::F32 || t == DType::BF16,
             "parity test: cases must allocate f32 or bf16, asked for " << to_string(t));
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

// ---------------------------------------------------------------- bf16 forward
namespace {

Tensor host_f32(const Tensor& t) { return t.to(Device::CPU).to(DType::F32); }

// The spacing of bf16 values at |v| (7 fraction bits); the subnormal spacing near 0.
double bf16_ulp(double v) {
  const double a = std::fabs(v);
  const double min_normal = std::ldexp(1.0, -126);
  if (a < min_normal) return std::ldexp(1.0, -133);
  return std::ldexp(1.0, std::ilogb(a) - 7);
}

// Worst |cuda - cpu| / (ulps * ulp(cpu) + scale_ulps * ulp(max |cpu|)); <= 1 passes.
// An exact case (both 0) passes only on equal values.
double bf16_closeness(const Tensor& cuda, const Tensor& cpu, double ulps, double scale_ulps) {
  const std::vector<float> a = host_f32(cuda).to_vector(), b = host_f32(cpu).to_vector();
  double largest = 0;
  for (float v : b) largest = std::max(largest, static_cast<double>(std::fabs(v)));
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return std::numeric_limits<double>::infinity();
    const double diff = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (diff == 0) continue;
    const double tolerance = ulps * bf16_ulp(b[i]) + scale_ulps * bf16_ulp(largest);
    worst = std::max(worst, tolerance > 0 ? diff / tolerance : std::numeric_limits<double>::infinity());
  }
  return worst;
}

Tensors run_forward(const OpCase& c, const Tensors& cpu_in, Device d) {
  const Tensors in = to_device(cpu_in, d);
  GuardedAlloc guard;
  Tensors out = c.forward(in, guard.alloc());
  INFO("bf16 forward on " << to_string(d));
  CHECK(guard.violations() == "");
  return out;
}

void check_bf16_case(const OpCase& c, uint64_t seed) {
  Tensors in;
  for (size_t i = 0; i < c.inputs.size(); ++i)
    in.push_back(make_input(c.inputs[i], seed + 101 * i).to(DType::BF16));
  const Tensors cpu = run_forward(c, in, Device::CPU);
  const Tensors gpu = run_forward(c, in, Device::CUDA);
  const Tensors again = run_forward(c, in, Device::CUDA);
  REQUIRE(cpu.size() == gpu.size());
  double worst = 0;
  bool deterministic = true;
  for (size_t k = 0; k < cpu.size(); ++k) {
    INFO("output " << k << ": cpu " << cpu[k].str() << ", cuda " << gpu[k].str());
    REQUIRE(gpu[k].dtype() == DType::BF16);
    CHECK(count_nonfinite(host_f32(cpu[k])) == 0);
    CHECK(count_nonfinite(host_f32(gpu[k])) == 0);
    const double r = bf16_closeness(gpu[k], cpu[k], c.bf16_ulps, c.bf16_scale_ulps);
    INFO("worst |cuda - cpu| / tolerance = " << r << " (" << c.bf16_ulps << " ulps + " << c.bf16_scale_ulps
                                             << " ulps of the largest value)");
    CHECK(r <= 1.0);
    worst = std::max(worst, r);
    deterministic = deterministic && bit_identical(host_f32(gpu[k]), host_f32(again[k]));
  }
  INFO("two CUDA runs of the same case must be bit-identical");
  CHECK(deterministic);
  std::printf("parity bf16 %-29s worst/tolerance: forward %.3g; %s\n", c.name.c_str(), worst,
              deterministic ? "deterministic" : "NOT deterministic");
}

}  // namespace

TEST_CASE("CUDA's bf16 forward ops agree with the CPU reference") {
  const std::vector<OpCase>& cases = op_cases();
  int checked = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    if (!cases[i].bf16) continue;
    ++checked;
    SUBCASE(cases[i].name.c_str()) {
      try {
        check_bf16_case(cases[i], 4000 + 37 * i);
      } catch (const std::exception& e) {
        FAIL_CHECK(cases[i].name << " threw: " << e.what());
      }
    }
  }
  CHECK(checked >= 10);
}

// At a real layer size cuDNN runs its bf16 tensor-core algorithms, with a
// 288-term reduction per output: the table's tolerance (2 ulps + 1 ulp of the
// largest value, see conv_case) must still hold, and the cast round trip of
// the whole activation must equal the CPU's.
TEST_CASE("bf16 convolution and cast at a COVID-Rate layer size match the CPU reference") {
  const ConvParams p = ConvParams::same(3, 1, 2);
  const Tensor x = randn({2, 32, 96, 96}, 61).to(DType::BF16);
  const Tensor w = randn({32, 32, 3, 3}, 62, DType::F32, 0.06).to(DType::BF16);
  const Tensor b = randn({32}, 63).to(DType::BF16);
  const Shape ys = conv2d_out_shape(x.shape(), w.shape(), p);
  const auto run = [&](Device d) {
    const Tensor xd = x.to(d), wd = w.to(d), bd = b.to(d);
    Tensor y = Tensor::empty(ys, DType::BF16, d);
    ops::conv2d_forward(xd, wd, &bd, p, y);
    Tensor wide = Tensor::empty(ys, DType::F32, d), narrow = Tensor::empty(ys, DType::BF16, d);
    ops::cast(y, wide);
    ops::cast(wide, narrow);
    return Tensors{y, wide, narrow};
  };
  const Tensors cpu = run(Device::CPU), gpu = run(Device::CUDA), again = run(Device::CUDA);
  CHECK(count_nonfinite(host_f32(gpu[0])) == 0);
  CHECK(bf16_closeness(gpu[0], cpu[0], 2, 1) <= 1.0);
  CHECK(bit_identical(host_f32(gpu[0]), host_f32(again[0])));
  // The casts are exact here (bf16 -> f32 -> bf16): the same bits as the input on both devices.
  CHECK(bit_identical(gpu[1], host_f32(gpu[0])));
  CHECK(bit_identical(host_f32(gpu[2]), host_f32(gpu[0])));

  // f32 -> bf16 rounding on the GPU equals the CPU's, ties, infinities and NaN included.
  std::vector<float> values = randn({4096}, 64, DType::F32, 1000.0).to_vector();
  values.insert(values.end(), {1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -8), 3.4e38f,
                               -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()});
  const Tensor f = Tensor::from_vector({static_cast<int64_t>(values.size())}, values);
  Tensor on_gpu = Tensor::empty(f.shape(), DType::BF16, Device::CUDA);
  ops::cast(f.to(Device::CUDA), on_gpu);
  const std::vector<float> got = host_f32(on_gpu).to_vector(), want = host_f32(f.to(DType::BF16)).to_vector();
  for (size_t i = 0; i < values.size(); ++i) {
    INFO("value " << values[i] << ": cuda " << got[i] << ", cpu " << want[i]);
    if (std::isnan(want[i])) {
      CHECK(std::isnan(got[i]));
    } else {
      CHECK(got[i] == want[i]);
    }
  }
}

// The direct kernel for tiny filter banks (kernels/cuda/conv_direct.h) at the
// shapes COVID-Rate gives it, against cuDNN on the same GPU and the CPU: the
// stem, enc1's stride-2 shortcut, dec4's transition and the head, batch 2 at
// 256² (a quarter of the full-resolution maps: every edge case of padding,
// stride and channel tile, in seconds). f32 sums of at most 64 products in
// another order; bf16 within the op table's conv tolerance of the CPU reference.
TEST_CASE("the direct kernel matches cuDNN and the CPU on COVID-Rate's tiny filter banks") {
  struct Layer {
    const char* name;
    int64_t cin, cout;
    int kernel, stride;
    bool relu;
  };
  const Layer layers[] = {{"stem 7x7 1->32", 1, 32, 7, 1, true},
                          {"enc1 shortcut 1x1/2 32->32", 32, 32, 1, 2, false},
                          {"dec4 transition 1x1 32->64", 32, 64, 1, 1, true},
                          {"head 1x1 64->1", 64, 1, 1, 1, false}};
  for (const Layer& l : layers) {
    INFO(l.name);
    ConvParams p = ConvParams::same(l.kernel, l.stride);
    p.relu = l.relu;
    const Tensor x = randn({2, l.cin, 256, 256}, 71);
    const Tensor w = randn({l.cout, l.cin, l.kernel, l.kernel}, 72, DType::F32, 0.2);
    const Tensor b = randn({l.cout}, 73);
    const Shape ys = conv2d_out_shape(x.shape(), w.shape(), p);
    REQUIRE(cuda::direct_conv_applies(x, w, p));
    const auto run = [&](Device d, DType dtype, bool direct) {
      cuda::set_direct_conv(direct);
      const Tensor xd = x.to(dtype).to(d), wd = w.to(dtype).to(d), bd = b.to(dtype).to(d);
      Tensor y = Tensor::empty(ys, dtype, d);
      ops::conv2d_forward(xd, wd, &bd, p, y);
      cuda::set_direct_conv(std::nullopt);
      return y;
    };
    const Tensor cpu = run(Device::CPU, DType::F32, true);
    const Tensor direct = run(Device::CUDA, DType::F32, true), cudnn = run(Device::CUDA, DType::F32, false);
    CHECK(count_nonfinite(direct) == 0);
    CHECK(rel_l2(direct, cpu) < 1e-6);
    CHECK(rel_l2(direct, cudnn) < 1e-5);
    CHECK(bit_identical(direct, run(Device::CUDA, DType::F32, true)));
    const Tensor cpu_bf16 = run(Device::CPU, DType::BF16, true), gpu_bf16 = run(Device::CUDA, DType::BF16, true);
    CHECK(bf16_closeness(gpu_bf16, cpu_bf16, 2, 1) <= 1.0);  // conv_case's tolerance
  }
}
