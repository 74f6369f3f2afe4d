// The custom CUDA kernels at sizes the op table (test_cuda_parity) does not
// reach: rows long enough to be cut into several blocks (multi-block
// reductions with their fixed-order final pass), the float4 path, the scalar
// fallback on misaligned views and odd lengths, maxpool ties, a batch-norm
// channel whose mean is far from zero. The CPU twin is the reference; CUDA
// reductions must also be bit-identical when rerun. Skipped (exit 77) without a GPU.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "kernels/ops.h"
#include "tests/cuda/require_gpu.h"
#include "tests/support/test_support.h"

using namespace covidrate;
using namespace covidrate::test;

namespace {

// A CUDA copy of a CPU tensor; misaligned: a view that starts one float into
// its allocation, so no pointer is 16-byte aligned and the scalar path runs.
Tensor to_gpu(const Tensor& cpu, bool misaligned) {
  if (!misaligned) return cpu.to(Device::CUDA);
  Tensor whole = Tensor::empty(Shape{cpu.numel() + 1}, DType::F32, Device::CUDA);
  Tensor view = whole.slice_batch(1, cpu.numel() + 1).reshape(cpu.shape());
  view.copy_from(cpu);
  return view;
}
Tensor gpu_empty(const Shape& s, bool misaligned) {
  return to_gpu(Tensor::full(s, 0.0), misaligned);
}

void expect_close(const char* what, const Tensor& cuda, const Tensor& cpu, double rtol = 1e-4,
                  double atol = 1e-5) {
  INFO(what << " " << cpu.shape().str());
  const double c = closeness(cuda.to(Device::CPU), cpu, rtol, atol);
  CHECK(c <= 1.0);
}

bool bit_identical(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// Odd sizes (scalar path, single-block rows) and CT-like sizes (float4 path,
// rows cut into several blocks).
const std::vector<Shape> kShapes{Shape{3, 5, 17, 19}, Shape{2, 8, 64, 64}};

}  // namespace

TEST_CASE("elementwise maps: relu, sigmoid, add, axpy, add_into, fill") {
  for (const Shape& s : kShapes)
    for (bool mis : {false, true}) {
      INFO("shape " << s.str() << (mis ? " misaligned" : " aligned"));
      const Tensor x = randn(s, 1, DType::F32, 3.0), dy = randn(s, 2), other = randn(s, 3);
      const Tensor gx = to_gpu(x, mis), gdy = to_gpu(dy, mis), gother = to_gpu(other, mis);

      Tensor y = Tensor::empty(s), gy = gpu_empty(s, mis);
      ops::relu_forward(x, y);
      ops::relu_forward(gx, gy);
      expect_close("relu", gy, y);
      Tensor dx = other.clone(), gdx = to_gpu(other, mis);
      ops::relu_backward(dy, y, dx, true);
      ops::relu_backward(gdy, gy, gdx, true);
      expect_close("relu backward (accumulate)", gdx, dx);

      ops::sigmoid_forward(x, y);
      ops::sigmoid_forward(gx, gy);
      expect_close("sigmoid", gy, y);
      ops::sigmoid_backward(dy, y, dx, false);
      ops::sigmoid_backward(gdy, gy, gdx, false);
      expect_close("sigmoid backward", gdx, dx);

      ops::add_forward(x, other, y);
      ops::add_forward(gx, gother, gy);
      expect_close("add", gy, y);
      ops::axpy(-0.25, x, y);
      ops::axpy(-0.25, gx, gy);
      expect_close("axpy", gy, y);
      ops::add_into(dy, y, true);
      ops::add_into(gdy, gy, true);
      expect_close("add_into accumulate", gy, y);
      ops::add_into(dy, y, false);
      ops::add_into(gdy, gy, false);
      expect_close("add_into copy", gy, y);
      ops::fill(y, 0.375);
      ops::fill(gy, 0.375);
      expect_close("fill", gy, y, 0, 0);
    }
}

TEST_CASE("per-(n, c) reductions: global average pool and mul_channel") {
  for (const Shape& s : kShapes)
    for (bool mis : {false, true}) {
      INFO("shape " << s.str() << (mis ? " misaligned" : " aligned"));
      const Shape nc{s.n(), s.c()};
      const Tensor x = randn(s, 4), dy = randn(s, 5), scale = uniform(nc, 6, 0.2, 1.5);
      Tensor pooled = Tensor::empty(nc), gpooled = gpu_empty(nc, mis);
      ops::global_avg_pool_forward(x, pooled);
      ops::global_avg_pool_forward(to_gpu(x, mis), gpooled);
      expect_close("global_avg_pool", gpooled, pooled);
      Tensor dx = randn(s, 7), gdx = to_gpu(dx, mis);
      ops::global_avg_pool_backward(scale, dx, true);
      ops::global_avg_pool_backward(to_gpu(scale, mis), gdx, true);
      expect_close("global_avg_pool backward", gdx, dx);

      Tensor y = Tensor::empty(s), gy = gpu_empty(s, mis);
      ops::mul_channel_forward(x, scale, y);
      ops::mul_channel_forward(to_gpu(x, mis), to_gpu(scale, mis), gy);
      expect_close("mul_channel", gy, y);
      Tensor ds = randn(nc, 8), gds = to_gpu(ds, mis);
      ops::mul_channel_backward(dy, x, scale, dx, ds, true);
      ops::mul_channel_backward(to_gpu(dy, mis), to_gpu(x, mis), to_gpu(scale, mis), gdx, gds, true);
      expect_close("mul_channel dx", gdx, dx);
      expect_close("mul_channel ds", gds, ds);
    }
}

TEST_CASE("batch norm: train statistics far from zero, running stats, backward, infer") {
  for (const Shape& s : kShapes)
    for (bool mis : {false, true}) {
      INFO("shape " << s.str() << (mis ? " misaligned" : " aligned"));
      const Shape ch{s.c()};
      // Mean 50, spread 2: a naive E[x^2] - E[x]^2 in float would lose the variance.
      Tensor x = randn(s, 9, DType::F32, 2.0);
      ops::add_into(Tensor::full(s, 50.0), x, true);
      const Tensor gamma = uniform(ch, 10, 0.5, 1.5), beta = randn(ch, 11), dy = randn(s, 12);
      const Tensor gx = to_gpu(x, mis), ggamma = to_gpu(gamma, mis), gbeta = to_gpu(beta, mis);
      const BatchNormParams p;
      Tensor rm = randn(ch, 13), rv = uniform(ch, 14, 0.5, 2.0);
      Tensor grm = to_gpu(rm, mis), grv = to_gpu(rv, mis);
      Tensor y = Tensor::empty(s), sm = Tensor::empty(ch), si = Tensor::empty(ch);
      Tensor gy = gpu_empty(s, mis), gsm = gpu_empty(ch, mis), gsi = gpu_empty(ch, mis);
      ops::batchnorm_forward_train(x, gamma, beta, p, rm, rv, y, sm, si);
      ops::batchnorm_forward_train(gx, ggamma, gbeta, p, grm, grv, gy, gsm, gsi);
      expect_close("bn y", gy, y, 1e-4, 1e-4);
      expect_close("bn save_mean", gsm, sm, 1e-6, 0);
      expect_close("bn save_invstd", gsi, si, 1e-5, 0);
      expect_close("bn running_mean", grm, rm, 1e-6, 1e-6);
      expect_close("bn running_var", grv, rv, 1e-5, 1e-6);

      Tensor dx = randn(s, 15), gdx = to_gpu(dx, mis);
      Tensor dg = randn(ch, 16), db = randn(ch, 17), gdg = to_gpu(dg, mis), gdb = to_gpu(db, mis);
      ops::batchnorm_backward(dy, x, gamma, sm, si, dx, dg, db, true);
      ops::batchnorm_backward(to_gpu(dy, mis), gx, ggamma, gsm, gsi, gdx, gdg, gdb, true);
      expect_close("bn dx", gdx, dx, 1e-4, 1e-4);
      expect_close("bn dgamma", gdg, dg, 1e-4, 1e-3);
      expect_close("bn dbeta", gdb, db, 1e-4, 1e-3);

      ops::batchnorm_forward_infer(x, gamma, beta, rm, rv, p, y);
      ops::batchnorm_forward_infer(gx, ggamma, gbeta, grm, grv, p, gy);
      expect_close("bn infer", gy, y, 1e-4, 1e-4);
    }
}

TEST_CASE("squeeze-and-excitation forward and backward, C = 32, C/r = 2 and C = 64, C/r = 4") {
  for (const Shape& s : {Shape{2, 32, 48, 48}, Shape{3, 64, 7, 9}})
    for (bool mis : {false, true}) {
      INFO("shape " << s.str() << (mis ? " misaligned" : " aligned"));
      const int64_t c = s.c(), cr = c / 16;
      const Tensor x = randn(s, 20), dy = randn(s, 21);
      const Tensor w1 = randn(Shape{cr, c}, 22, DType::F32, 0.3), w2 = randn(Shape{c, cr}, 23, DType::F32, 0.3);
      const Tensor gx = to_gpu(x, mis), gw1 = to_gpu(w1, mis), gw2 = to_gpu(w2, mis);
      const Shape nc{s.n(), c}, ncr{s.n(), cr};
      SeSaved saved{Tensor::empty(nc), Tensor::empty(ncr), Tensor::empty(nc)};
      SeSaved gsaved{gpu_empty(nc, mis), gpu_empty(ncr, mis), gpu_empty(nc, mis)};
      Tensor y = Tensor::empty(s), gy = gpu_empty(s, mis);
      ops::se_forward(x, w1, w2, y, saved);
      ops::se_forward(gx, gw1, gw2, gy, gsaved);
      expect_close("se y", gy, y);
      expect_close("se pooled", gsaved.pooled, saved.pooled);
      expect_close("se hidden", gsaved.hidden, saved.hidden);
      expect_close("se scale", gsaved.scale, saved.scale);

      Tensor dx = Tensor::empty(s), gdx = gpu_empty(s, mis);
      Tensor dw1 = randn(w1.shape(), 24), dw2 = randn(w2.shape(), 25);
      Tensor gdw1 = to_gpu(dw1, mis), gdw2 = to_gpu(dw2, mis);
      ops::se_backward(dy, x, w1, w2, saved, dx, dw1, dw2, false);
      ops::se_backward(to_gpu(dy, mis), gx, gw1, gw2, gsaved, gdx, gdw1, gdw2, false);
      expect_close("se dx", gdx, dx);
      expect_close("se dw1", gdw1, dw1, 1e-4, 1e-4);
      expect_close("se dw2", gdw2, dw2, 1e-4, 1e-4);
    }
}

TEST_CASE("hybrid loss: sums, value and gradient over a batch cut into many blocks") {
  for (const Shape& s : {Shape{2, 1, 96, 96}, Shape{3, 1, 31, 29}})
    for (bool mis : {false, true}) {
      INFO("shape " << s.str() << (mis ? " misaligned" : " aligned"));
      Tensor p = uniform(s, 30, 0.0, 1.0);
      p.data<float>()[0] = 0.f;  // both clamp edges and a saturated pixel
      p.data<float>()[1] = 1.f;
      const Tensor y = bernoulli(s, 31, 0.2);
      HybridLossParams q;
      q.pos_weight = 3.0;
      const LossSums cpu = ops::hybrid_loss_forward(p, y, q);
      const Tensor gp = to_gpu(p, mis), gyt = to_gpu(y, mis);
      const LossSums gpu = ops::hybrid_loss_forward(gp, gyt, q);
      CHECK(gpu.count == cpu.count);
      CHECK(gpu.tp == doctest::Approx(cpu.tp).epsilon(1e-9));
      CHECK(gpu.fp == doctest::Approx(cpu.fp).epsilon(1e-9));
      CHECK(gpu.fn == doctest::Approx(cpu.fn).epsilon(1e-9));
      CHECK(gpu.bce_sum == doctest::Approx(cpu.bce_sum).epsilon(1e-9));
      CHECK(gpu.loss == doctest::Approx(cpu.loss).epsilon(1e-9));

      Tensor dp = randn(s, 32), gdp = to_gpu(dp, mis);
      ops::hybrid_loss_backward(p, y, q, cpu, 0.5, dp, true);
      ops::hybrid_loss_backward(gp, gyt, q, gpu, 0.5, gdp, true);
      expect_close("loss dp", gdp, dp, 1e-4, 1e-7);
    }
}

TEST_CASE("Adam: three steps with decay, float4 and scalar lengths") {
  for (int64_t n : {100000, 100003})
    for (bool mis : {false, true}) {
      INFO(n << (mis ? " misaligned" : " aligned"));
      const Shape s{n};
      Tensor w = randn(s, 40), m = Tensor::zeros(s), v = Tensor::zeros(s);
      Tensor gw = to_gpu(w, mis), gm = to_gpu(m, mis), gv = to_gpu(v, mis);
      AdamParams p;
      p.decay = 0.01;
      for (int64_t step = 1; step <= 3; ++step) {
        const Tensor g = randn(s, 40 + static_cast<uint64_t>(step), DType::F32, 0.01);
        ops::adam_step(w, g, m, v, p, step);
        ops::adam_step(gw, to_gpu(g, mis), gm, gv, p, step);
      }
      expect_close("adam w", gw, w, 1e-5, 1e-7);
      expect_close("adam m", gm, m, 1e-5, 1e-9);
      expect_close("adam v", gv, v, 1e-5, 1e-12);
    }
}

TEST_CASE("shape ops: concat, upsample2x, maxpool2x2 (with ties)") {
  for (const Shape& s : {Shape{2, 3, 34, 38}, Shape{2, 4, 64, 64}})
    for (bool mis : {false, true}) {
      INFO("shape " << s.str() << (mis ? " misaligned" : " aligned"));
      const Tensor a = randn(s, 50), b = randn(Shape{s.n(), 5, s.h(), s.w()}, 51);
      const Shape cat{s.n(), s.c() + 5, s.h(), s.w()};
      Tensor y = Tensor::empty(cat), gy = gpu_empty(cat, mis);
      ops::concat_channels_forward({a, b}, y);
      ops::concat_channels_forward({to_gpu(a, mis), to_gpu(b, mis)}, gy);
      expect_close("concat", gy, y, 0, 0);
      std::vector<Tensor> dxs{randn(a.shape(), 52), randn(b.shape(), 53)};
      std::vector<Tensor> gdxs{to_gpu(dxs[0], mis), to_gpu(dxs[1], mis)};
      ops::concat_channels_backward(y, dxs, true);
      ops::concat_channels_backward(gy, gdxs, true);
      expect_close("concat backward a", gdxs[0], dxs[0]);
      expect_close("concat backward b", gdxs[1], dxs[1]);

      const Shape up{s.n(), s.c(), 2 * s.h(), 2 * s.w()};
      Tensor u = Tensor::empty(up), gu = gpu_empty(up, mis);
      ops::upsample2x_forward(a, u);
      ops::upsample2x_forward(to_gpu(a, mis), gu);
      expect_close("upsample", gu, u, 0, 0);
      const Tensor du = randn(up, 54);
      Tensor da = randn(s, 55), gda = to_gpu(da, mis);
      ops::upsample2x_backward(du, da, true);
      ops::upsample2x_backward(to_gpu(du, mis), gda, true);
      expect_close("upsample backward", gda, da);

      // Values rounded to a coarse grid: many windows hold ties.
      Tensor x = randn(s, 56);
      for (float* p = x.data<float>(), *e = p + x.numel(); p != e; ++p) *p = static_cast<float>(static_cast<int>(*p * 2));
      const Shape half{s.n(), s.c(), s.h() / 2, s.w() / 2};
      Tensor mp = Tensor::empty(half), gmp = gpu_empty(half, mis);
      ops::maxpool2x2_forward(x, mp);
      ops::maxpool2x2_forward(to_gpu(x, mis), gmp);
      expect_close("maxpool", gmp, mp, 0, 0);
      const Tensor dmp = randn(half, 57);
      Tensor dxp = Tensor::empty(s), gdxp = gpu_empty(s, mis);
      ops::maxpool2x2_backward(dmp, x, dxp, false);
      ops::maxpool2x2_backward(to_gpu(dmp, mis), to_gpu(x, mis), gdxp, false);
      expect_close("maxpool backward (ties to the first)", gdxp, dxp, 0, 0);
    }
}

TEST_CASE("reductions are bit-identical when rerun") {
  const Shape s{4, 16, 128, 128};
  const Shape ch{s.c()}, nc{s.n(), s.c()};
  const Tensor x = randn(s, 60).to(Device::CUDA), dy = randn(s, 61).to(Device::CUDA);
  const Tensor gamma = uniform(ch, 62, 0.5, 1.5).to(Device::CUDA), beta = randn(ch, 63).to(Device::CUDA);
  const Tensor w1 = randn(Shape{1, 16}, 64).to(Device::CUDA), w2 = randn(Shape{16, 1}, 65).to(Device::CUDA);
  auto run = [&] {
    std::vector<Tensor> out;
    Tensor rm = Tensor::zeros(ch, DType::F32, Device::CUDA), rv = Tensor::zeros(ch, DType::F32, Device::CUDA);
    Tensor y = Tensor::empty(s, DType::F32, Device::CUDA), dx = Tensor::empty(s, DType::F32, Device::CUDA);
    Tensor sm = Tensor::empty(ch, DType::F32, Device::CUDA), si = Tensor::empty(ch, DType::F32, Device::CUDA);
    Tensor dg = Tensor::zeros(ch, DType::F32, Device::CUDA), db = Tensor::zeros(ch, DType::F32, Device::CUDA);
    ops::batchnorm_forward_train(x, gamma, beta, {}, rm, rv, y, sm, si);
    ops::batchnorm_backward(dy, x, gamma, sm, si, dx, dg, db, false);
    out.insert(out.end(), {rm, rv, sm, si, dx, dg, db});
    SeSaved saved{Tensor::empty(nc, DType::F32, Device::CUDA), Tensor::empty(Shape{s.n(), 1}, DType::F32, Device::CUDA),
                  Tensor::empty(nc, DType::F32, Device::CUDA)};
    Tensor dw1 = Tensor::zeros(w1.shape(), DType::F32, Device::CUDA), dw2 = Tensor::zeros(w2.shape(), DType::F32, Device::CUDA);
    Tensor sy = Tensor::empty(s, DType::F32, Device::CUDA), sdx = Tensor::empty(s, DType::F32, Device::CUDA);
    ops::se_forward(x, w1, w2, sy, saved);
    ops::se_backward(dy, x, w1, w2, saved, sdx, dw1, dw2, false);
    out.insert(out.end(), {saved.pooled, saved.scale, dw1, dw2, sdx});
    return out;
  };
  const std::vector<Tensor> first = run(), second = run();
  for (size_t i = 0; i < first.size(); ++i) {
    INFO("output " << i);
    CHECK(bit_identical(first[i], second[i]));
  }
  const Tensor p = uniform(Shape{8, 1, 128, 128}, 66, 0, 1).to(Device::CUDA);
  const Tensor t = bernoulli(Shape{8, 1, 128, 128}, 67, 0.1).to(Device::CUDA);
  const LossSums l1 = ops::hybrid_loss_forward(p, t, {}), l2 = ops::hybrid_loss_forward(p, t, {});
  CHECK(std::memcmp(&l1, &l2, sizeof l1) == 0);
}

TEST_CASE("interleave_phases: pair stores into an aligned output, element stores into a misaligned view") {
  // The four-phase form's interleaving writes two outputs at a time when y is
  // aligned to a pair; a view one element in (a decoder half written in place)
  // takes the element-wise path. Both against the CPU, with and without the
  // fused bias and ReLU.
  for (const bool mis : {false, true}) {
    for (const bool fused : {false, true}) {
      INFO((mis ? "misaligned" : "aligned") << (fused ? ", bias + relu" : ", plain"));
      const Tensor z = randn(Shape{2, 4 * 3, 6, 9}, 81), bias = randn(Shape{3}, 82);
      const Shape ys{2, 3, 10, 16};
      Tensor y = Tensor::empty(ys), gy = gpu_empty(ys, mis);
      ops::interleave_phases_forward(z, fused ? &bias : nullptr, fused, y);
      const Tensor gbias = to_gpu(bias, mis);
      ops::interleave_phases_forward(to_gpu(z, mis), fused ? &gbias : nullptr, fused, gy);
      CHECK(bit_identical(gy.to(Device::CPU), y));  // one addition and a max: nothing to round differently
    }
  }
}
