// Our CPU ops against PyTorch 1.13: tests/golden/ops_golden.safetensors holds
// seeded inputs and PyTorch's results (tools/dev/make_golden.py documents each
// group and how to regenerate). The references were computed in float64 and
// stored as float32, so they carry float32 rounding (~6e-8 relative); each op
// runs here in float64 and in float32, with tolerances stated per dtype.
#include <doctest/doctest.h>

#include <map>
#include <string>

#include "kernels/ops.h"
#include "nn/safetensors.h"
#include "tests/support/test_support.h"

using namespace covidrate;
using namespace covidrate::test;

namespace {

const std::map<std::string, Tensor>& golden() {
  static const std::map<std::string, Tensor> tensors =
      safetensors::load(source_dir() + "/tests/golden/ops_golden.safetensors");
  return tensors;
}

struct Tolerance {
  double rtol, atol;
};
// float64: only the float32 rounding of the stored references (and of their inputs) remains.
constexpr Tolerance kF64{1e-6, 1e-7};
// float32: our own float32 arithmetic on top, over sums of at most a few hundred terms.
constexpr Tolerance kF32{2e-5, 2e-6};

struct Golden {
  DType dtype;
  Tolerance tol;
  // A copy of a stored tensor in the dtype under test.
  Tensor get(const std::string& name) const {
    auto it = golden().find(name);
    REQUIRE_MESSAGE(it != golden().end(), "missing golden tensor " << name);
    return it->second.to(dtype);
  }
  Tensor zeros_like(const std::string& name) const {
    return Tensor::zeros(golden().at(name).shape(), dtype);
  }
  void expect(const std::string& name, const Tensor& ours) const {
    const Tensor ref = golden().at(name);
    INFO(name << ": ours " << ours.str() << ", reference " << ref.str() << ", rel_l2 "
              << rel_l2(ours, ref));
    REQUIRE(ours.numel() == ref.numel());
    CHECK(closeness(ours, ref, tol.rtol, tol.atol) <= 1.0);
  }
};

// Runs body once per dtype, each in its own SUBCASE.
template <class Body> void for_each_dtype(Body body) {
  SUBCASE("float64") { body(Golden{DType::F64, kF64}); }
  SUBCASE("float32") { body(Golden{DType::F32, kF32}); }
}

}  // namespace

TEST_CASE("golden: conv2d 3x3, dilation 2, stride 2, with bias") {
  for_each_dtype([](const Golden& g) {
    const ConvParams p = ConvParams::same(3, /*stride=*/2, /*dilation=*/2);
    REQUIRE(p.pad == 2);
    const Tensor x = g.get("conv.x"), w = g.get("conv.w"), b = g.get("conv.b"),
                 dy = g.get("conv.dy");
    Tensor y = g.zeros_like("conv.y"), dx = g.zeros_like("conv.dx");
    Tensor dw = g.zeros_like("conv.dw"), db = g.zeros_like("conv.db");
    ops::conv2d_forward(x, w, &b, p, y);
    ops::conv2d_backward_data(dy, w, p, dx, false);
    ops::conv2d_backward_filter(dy, x, p, dw, &db);
    g.expect("conv.y", y);
    g.expect("conv.dx", dx);
    g.expect("conv.dw", dw);
    g.expect("conv.db", db);
  });
}

TEST_CASE("golden: batch norm training step, running statistics, backward") {
  for_each_dtype([](const Golden& g) {
    const BatchNormParams p{1e-3, 0.01};
    const Tensor x = g.get("bn.x"), gamma = g.get("bn.gamma"), beta = g.get("bn.beta");
    Tensor running_mean = g.get("bn.running_mean"), running_var = g.get("bn.running_var");
    Tensor y = g.zeros_like("bn.y"), mean = g.zeros_like("bn.save_mean");
    Tensor invstd = g.zeros_like("bn.save_invstd");
    ops::batchnorm_forward_train(x, gamma, beta, p, running_mean, running_var, y, mean, invstd);
    g.expect("bn.y", y);
    g.expect("bn.save_mean", mean);
    g.expect("bn.save_invstd", invstd);
    g.expect("bn.new_running_mean", running_mean);
    g.expect("bn.new_running_var", running_var);

    Tensor dx = g.zeros_like("bn.dx"), dgamma = g.zeros_like("bn.dgamma"),
           dbeta = g.zeros_like("bn.dbeta");
    ops::batchnorm_backward(g.get("bn.dy"), x, gamma, mean, invstd, dx, dgamma, dbeta, false);
    g.expect("bn.dx", dx);
    g.expect("bn.dgamma", dgamma);
    g.expect("bn.dbeta", dbeta);
  });
}

TEST_CASE("golden: residual squeeze-and-excitation") {
  for_each_dtype([](const Golden& g) {
    const Tensor x = g.get("se.x"), w1 = g.get("se.w1"), w2 = g.get("se.w2");
    const int64_t n = x.n(), c = x.c(), cr = w1.n();
    SeSaved saved{Tensor::empty({n, c}, g.dtype), Tensor::empty({n, cr}, g.dtype),
                  Tensor::empty({n, c}, g.dtype)};
    Tensor y = g.zeros_like("se.y");
    ops::se_forward(x, w1, w2, y, saved);
    g.expect("se.y", y);

    Tensor dx = g.zeros_like("se.dx"), dw1 = g.zeros_like("se.dw1"), dw2 = g.zeros_like("se.dw2");
    ops::se_backward(g.get("se.dy"), x, w1, w2, saved, dx, dw1, dw2, false);
    g.expect("se.dx", dx);
    g.expect("se.dw1", dw1);
    g.expect("se.dw2", dw2);
  });
}

TEST_CASE("golden: hybrid loss (weighted BCE + focal Tversky) and its gradient") {
  for_each_dtype([](const Golden& g) {
    HybridLossParams params;
    params.pos_weight = 2.0;  // the rest as in kernels/ops.h: alpha 0.7, beta 0.3, gamma 4/3
    const Tensor p = g.get("loss.p"), y = g.get("loss.y");
    const LossSums sums = ops::hybrid_loss_forward(p, y, params);
    g.expect("loss.loss", Tensor::from_vector({1}, std::vector<double>{sums.loss}, DType::F64));
    Tensor dp = g.zeros_like("loss.dp");
    ops::hybrid_loss_backward(p, y, params, sums, 1.0, dp, false);
    g.expect("loss.dp", dp);
  });
}

TEST_CASE("golden: three Keras-2 Adam steps with learning-rate decay") {
  for_each_dtype([](const Golden& g) {
    AdamParams p;
    p.lr = 0.01;
    p.decay = 0.1;
    Tensor w = g.get("adam.w0"), m = g.zeros_like("adam.m3"), v = g.zeros_like("adam.v3");
    for (int step = 1; step <= 3; ++step)
      ops::adam_step(w, g.get("adam.g" + std::to_string(step)), m, v, p, step);
    g.expect("adam.w3", w);
    g.expect("adam.m3", m);
    g.expect("adam.v3", v);
  });
}
