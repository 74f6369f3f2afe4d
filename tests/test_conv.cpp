// The CPU convolution (kernels/cpu/conv2d.cpp, reached through ops::) against the
// direct loops of kernels/cpu/conv2d_direct.cpp, over the kernels, strides,
// dilations and paddings COVID-Rate uses; the overwrite/accumulate contract;
// and the argument checks. (Finite-difference gradients of every op live in
// tests/test_op_gradients.cpp.)
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>
#include <string>

#include "kernels/cpu/conv2d_direct.h"
#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/ops.h"
#include "nn/autograd.h"
#include "tests/support/test_support.h"

using namespace covidrate;

namespace {

struct Config {
  int kernel = 3, stride = 1, dilation = 1, pad = 1;
  int64_t batch = 2, cin = 5, cout = 6, h = 13, w = 17;
  bool bias = true;

  std::string str() const {
    std::ostringstream os;
    os << "k" << kernel << " s" << stride << " d" << dilation << " p" << pad << " x"
       << x_shape().str() << " cout " << cout << (bias ? "" : " no bias");
    return os.str();
  }
  ConvParams params() const { return {stride, pad, dilation}; }
  Shape x_shape() const { return {batch, cin, h, w}; }
  Shape w_shape() const { return {cout, cin, kernel, kernel}; }
  Shape y_shape() const { return conv2d_out_shape(x_shape(), w_shape(), params()); }
};

// The grid: every kernel/stride/dilation with "same" padding and one other
// padding, on non-square images enlarged where the dilated kernel needs it.
std::vector<Config> grid() {
  std::vector<Config> out;
  for (int k : {1, 3, 7})
    for (int s : {1, 2})
      for (int d : {1, 2, 4, 8}) {
        const int same = ConvParams::same(k, s, d).pad;
        for (int pad : {same, same == 1 ? 0 : 1}) {
          Config c;
          c.kernel = k, c.stride = s, c.dilation = d, c.pad = pad;
          const int span = d * (k - 1) + 1;
          c.h = std::max<int64_t>(13, span - 2 * pad + 2);
          c.w = c.h + 4;
          c.bias = pad == same;  // half the cases run without a bias
          out.push_back(c);
        }
      }
  return out;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector_f64()) m = std::max(m, std::abs(v));
  return m;
}

// a matches the reference b to rtol, with an absolute floor of rtol * max|b| for
// the values that cancel to near zero.
void check_close(const Tensor& a, const Tensor& b, double rtol, const std::string& what) {
  const double c = test::closeness(a, b, rtol, rtol * std::max(1.0, max_abs(b)));
  INFO(what << ": closeness " << c << " (<= 1 passes)");
  CHECK(c <= 1.0);
}

// Runs the three passes through ops:: and through the direct loops and compares.
void compare_with_direct(const Config& c, DType dtype, double rtol) {
  INFO(c.str() << (dtype == DType::F64 ? " f64" : " f32"));
  const ConvParams p = c.params();
  const Tensor x = test::randn(c.x_shape(), 1, dtype);
  const Tensor w = test::randn(c.w_shape(), 2, dtype, 0.3);
  const Tensor bias = test::randn({c.cout}, 3, dtype);
  const Tensor dy = test::randn(c.y_shape(), 4, dtype);
  const Tensor* b = c.bias ? &bias : nullptr;

  Tensor y = Tensor::full(c.y_shape(), NAN, dtype), y_ref = Tensor::empty(c.y_shape(), dtype);
  ops::conv2d_forward(x, w, b, p, y);
  cpu::direct::conv2d_forward(x, w, b, p, y_ref);
  check_close(y, y_ref, rtol, "forward");

  Tensor dx = Tensor::full(c.x_shape(), NAN, dtype), dx_ref = Tensor::empty(c.x_shape(), dtype);
  ops::conv2d_backward_data(dy, w, p, dx, false);
  cpu::direct::conv2d_backward_data(dy, w, p, dx_ref, false);
  check_close(dx, dx_ref, rtol, "backward data");

  // Parameter gradients accumulate: both start from the same nonzero values.
  Tensor dw = test::randn(c.w_shape(), 5, dtype), dw_ref = dw.clone();
  Tensor db = test::randn({c.cout}, 6, dtype), db_ref = db.clone();
  ops::conv2d_backward_filter(dy, x, p, dw, c.bias ? &db : nullptr);
  cpu::direct::conv2d_backward_filter(dy, x, p, dw_ref, c.bias ? &db_ref : nullptr);
  check_close(dw, dw_ref, rtol, "backward filter dw");
  check_close(db, db_ref, rtol, "backward filter dbias");
}

// Runs `body` with the Winograd layers forced to F(2x2, 3x3), then to F(4x4, 3x3),
// then choosing per layer (as the program runs), so that every test through
// a 3x3 stride-1 layer checks both tile sizes.
void for_each_winograd_tile(const std::function<void()>& body) {
  struct Reset {
    ~Reset() { cpu::set_winograd_tile(0); }
  } reset;
  for (int m : {2, 4, 0}) {
    INFO("Winograd tile " << (m ? std::to_string(m) : std::string("chosen per layer")));
    cpu::set_winograd_tile(m);
    body();
  }
}

// Messages name the op (or "conv2d" for the shared shape rule) and the shapes.
void check_error(const std::function<void()>& call, const std::vector<std::string>& must_contain) {
  try {
    call();
    FAIL("no covidrate::Error thrown");
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& part : must_contain) {
      INFO("message: " << msg << "\nmissing: " << part);
      CHECK(msg.find(part) != std::string::npos);
    }
  }
}

}  // namespace

TEST_CASE("conv2d matches the direct loops in float32 and float64") {
  for_each_winograd_tile([] {
    for (const Config& c : grid()) {
      compare_with_direct(c, DType::F32, 1e-4);
      compare_with_direct(c, DType::F64, 1e-10);
    }
  });
}

TEST_CASE("conv2d matches the direct loops when the column matrix is built in several bands") {
  // 64 channels at 96x100 unroll to 576 x 9600 values, 22 MB in float: more than
  // one band of the bounded column buffer, so band seams and offsets are tested.
  // The same layer is 3x3 stride 1, so it checks the seams between bands of
  // Winograd tile rows too (on 2 threads: 4 bands of 4x4 tiles, 8 of 2x2 ones).
  for_each_winograd_tile([] {
    Config c;
    c.cin = 64, c.cout = 7, c.h = 96, c.w = 100, c.batch = 2;
    compare_with_direct(c, DType::F32, 1e-4);
    c.stride = 2, c.dilation = 2, c.pad = 2, c.batch = 1;
    compare_with_direct(c, DType::F64, 1e-10);
  });
}

TEST_CASE("conv2d 3x3 stride 1 (Winograd) stays accurate over many input channels") {
  // The Winograd transforms add and halve; with 512 channels summed per output
  // in float, the result must still match the double-precision direct sum.
  // F(4x4)'s larger coefficients lose more bits than F(2x2)'s halvings; both
  // must hold.
  for_each_winograd_tile([] {
    Config c;
    c.cin = 512, c.cout = 5, c.h = 10, c.w = 13, c.batch = 1;
    compare_with_direct(c, DType::F32, 1e-4);
    c.pad = 2;  // the transposed convolution of the backward pass then has padding 0
    compare_with_direct(c, DType::F32, 1e-4);
  });
}

// The four-phase up-convolutions of the inference form (model/inference_form.h)
// are 2x2 kernels at stride 1, padding 1: their inference forwards run
// Winograd F(4x4, 2x2). Sizes that are not multiples of the 4x4 tile (tiles
// over every edge), pad 0 and 1, images smaller than a tile, several bands of
// tile rows, 512 input channels in float against the double direct sum, bias
// and the fused ReLU.
TEST_CASE("conv2d 2x2 stride 1 for inference (Winograd F(4x4, 2x2)) matches the direct loops") {
  struct Case {
    int64_t batch, cin, cout, h, w;
    int pad;
    bool bias, relu;
  };
  const std::vector<Case> cases = {
      {2, 5, 6, 13, 17, 1, true, false}, {2, 5, 6, 13, 17, 0, false, false}, {1, 3, 4, 1, 1, 1, true, true},
      {1, 3, 4, 2, 3, 0, true, false},   {1, 7, 9, 4, 8, 1, false, true},   {2, 64, 7, 96, 100, 1, true, true},
      {1, 512, 5, 10, 13, 1, true, false}, {1, 16, 32, 33, 33, 1, true, true}};
  for (const Case& c : cases) {
    for (const DType dtype : {DType::F32, DType::F64}) {
      ConvParams p{1, c.pad, 1};
      p.inference = true;
      p.relu = c.relu;
      const Shape xs{c.batch, c.cin, c.h, c.w}, ws{c.cout, c.cin, 2, 2};
      const Shape ys = conv2d_out_shape(xs, ws, p);
      INFO("x " << xs.str() << " -> " << ys.str() << " pad " << c.pad << (c.relu ? " relu" : "") << " "
                << to_string(dtype));
      const Tensor x = test::randn(xs, 21, dtype), w = test::randn(ws, 22, dtype, 0.3);
      const Tensor bias = test::randn({c.cout}, 23, dtype);
      const Tensor* b = c.bias ? &bias : nullptr;
      CHECK(cpu::winograd_forward_applies(w, p));
      Tensor y = Tensor::full(ys, NAN, dtype), want = Tensor::empty(ys, dtype);
      ops::conv2d_forward(x, w, b, p, y);
      cpu::direct::conv2d_forward(x, w, b, p, want);
      check_close(y, want, dtype == DType::F64 ? 1e-10 : 1e-4, "F(4x4, 2x2) forward");
    }
  }
  SUBCASE("only where no gradient is taken, only 2x2 at stride 1 without dilation, padding at most 1") {
    const Tensor w2 = Tensor::zeros({4, 3, 2, 2});
    ConvParams p{1, 1, 1};
    CHECK_FALSE(cpu::winograd_forward_applies(w2, p));  // training: im2col, as before
    p.inference = true;
    CHECK(cpu::winograd_forward_applies(w2, p));
    CHECK_FALSE(cpu::winograd_applies(w2, p));  // no backward pass is written for it
    for (const ConvParams& other : {ConvParams{2, 1, 1}, ConvParams{1, 1, 2}, ConvParams{1, 2, 1}}) {
      ConvParams q = other;
      q.inference = true;
      INFO("stride " << q.stride << " pad " << q.pad << " dilation " << q.dilation);
      CHECK_FALSE(cpu::winograd_forward_applies(w2, q));
    }
    CHECK_FALSE(cpu::winograd_forward_applies(Tensor::zeros({4, 3, 2, 3}), p));
  }
}

TEST_CASE("conv2d 3x3 stride 1 for inference takes F(4x4) on large maps, F(2x2) on small ones and in training") {
  // The thresholds come from bench_conv's winograd/ family (see choose_tile).
  CHECK(cpu::winograd_tile(512, 512, 1, true) == 4);
  CHECK(cpu::winograd_tile(512, 512, 2, true) == 4);
  CHECK(cpu::winograd_tile(64, 64, 2, true) == 4);  // 1/8 of 512: 16 x 16 tiles, 8 per phase row
  CHECK(cpu::winograd_tile(40, 40, 1, true) == 4);  // 10 x 10 tiles
  CHECK(cpu::winograd_tile(32, 32, 1, true) == 2);  // 1/16 of 512: 64 tiles
  CHECK(cpu::winograd_tile(44, 44, 2, true) == 2);  // 1/8 of 352: 6 tiles per phase row
  CHECK(cpu::winograd_tile(32, 32, 8, true) == 2);  // one tile per phase row
  CHECK(cpu::winograd_tile(2, 2, 1, true) == 2);    // one 4x4 tile for 4 outputs: 36 products, not 16
  CHECK(cpu::winograd_tile(512, 512, 1, false) == 2);  // a gradient will be taken
  cpu::set_winograd_tile(4);
  CHECK(cpu::winograd_tile(2, 2, 1, false) == 4);
  cpu::set_winograd_tile(0);
  CHECK_THROWS_AS(cpu::set_winograd_tile(3), Error);

  // ag::conv2d computes for inference when no tape records, and the tape
  // refuses a convolution marked for inference.
  const Tensor x = test::randn({1, 2, 48, 48}, 1), w = test::randn({3, 2, 3, 3}, 2);
  ConvParams p = ConvParams::same(3), inference = p;
  inference.inference = true;
  Tensor direct = Tensor::empty({1, 3, 48, 48}), f2 = direct.clone(), f4 = direct.clone();
  ops::conv2d_forward(x, w, nullptr, p, f2);
  ops::conv2d_forward(x, w, nullptr, inference, f4);
  cpu::direct::conv2d_forward(x, w, nullptr, p, direct);
  check_close(f4, direct, 1e-4, "F(4x4)");
  CHECK(f4.to_vector_f64() != f2.to_vector_f64());  // the other tile: other rounding
  {
    ag::NoGrad no_tape;
    CHECK(ag::conv2d(ag::Var(x), ag::Var(w), ag::Var(), p).value().to_vector_f64() == f4.to_vector_f64());
  }
  ag::Tape tape;
  const ag::Var xv(x, true), wv(w, true);
  CHECK(ag::conv2d(xv, wv, ag::Var(), p).value().to_vector_f64() == f2.to_vector_f64());
  check_error([&] { ag::conv2d(xv, wv, ag::Var(), inference); }, {"conv2d", "no backward"});
  Tensor dx = Tensor::zeros(x.shape()), dw = Tensor::zeros(w.shape());
  check_error([&] { ops::conv2d_backward_data(f2, w, inference, dx, false); }, {"conv2d_backward_data", "forward only"});
  check_error([&] { ops::conv2d_backward_filter(f2, x, inference, dw, nullptr); },
              {"conv2d_backward_filter", "forward only"});
}

TEST_CASE("conv2d handles images smaller than a tile or a kernel") {
  // 1-pixel and 2-pixel sides: Winograd tiles hanging over every edge, padded
  // rows wider than the image, im2col rows with no valid column.
  for_each_winograd_tile([] {
    for (int64_t h : {1, 2, 3, 5}) {
      for (int k : {3, 7}) {
        Config c;
        c.kernel = k, c.h = h, c.w = h + 1, c.pad = k / 2;
        compare_with_direct(c, DType::F64, 1e-10);
        c.stride = 2;
        compare_with_direct(c, DType::F64, 1e-10);
      }
    }
  });
}

TEST_CASE("conv2d 1x1 stride 1 (the gemm without unrolling) matches the direct loops") {
  Config c;
  c.kernel = 1, c.pad = 0, c.cin = 9, c.cout = 3;
  compare_with_direct(c, DType::F32, 1e-4);
  compare_with_direct(c, DType::F64, 1e-10);
  // Wide enough for several bands of output rows, each a gemm on a slice of x.
  c.h = 40, c.w = 50;
  compare_with_direct(c, DType::F32, 1e-4);
}

TEST_CASE("conv2d_backward_data overwrites or accumulates dx") {
  // 3x3 stride 1 (Winograd, both tiles), 1x1 stride 1 (gemm with beta), and 1x1 stride 2, where
  // three quarters of dx receive no gradient at all and must still be written.
  for_each_winograd_tile([&] {
    for (Config c : {Config{}, Config{.kernel = 1, .pad = 0}, Config{.kernel = 1, .stride = 2, .pad = 0}}) {
      INFO(c.str());
      const ConvParams p = c.params();
      const Tensor w = test::randn(c.w_shape(), 7, DType::F64);
      const Tensor dy = test::randn(c.y_shape(), 8, DType::F64);
      Tensor fresh = Tensor::full(c.x_shape(), NAN, DType::F64);
      ops::conv2d_backward_data(dy, w, p, fresh, false);
      CHECK(test::count_nonfinite(fresh) == 0);

      Tensor nines = Tensor::full(c.x_shape(), 9.0, DType::F64);
      ops::conv2d_backward_data(dy, w, p, nines, false);
      CHECK(test::closeness(nines, fresh, 1e-12, 1e-12) <= 1.0);

      Tensor summed = Tensor::full(c.x_shape(), 9.0, DType::F64);
      ops::conv2d_backward_data(dy, w, p, summed, true);
      Tensor expected = fresh.clone();
      ops::axpy(1.0, Tensor::full(c.x_shape(), 9.0, DType::F64), expected);
      CHECK(test::closeness(summed, expected, 1e-12, 1e-12) <= 1.0);
    }
  });
}

TEST_CASE("conv2d_backward_filter accumulates into dw and dbias") {
  for (Config c : {Config{}, Config{.kernel = 1, .pad = 0}}) {
    INFO(c.str());
    const ConvParams p = c.params();
    const Tensor x = test::randn(c.x_shape(), 9, DType::F64);
    const Tensor dy = test::randn(c.y_shape(), 10, DType::F64);
    Tensor dw = Tensor::zeros(c.w_shape(), DType::F64), db = Tensor::zeros({c.cout}, DType::F64);
    ops::conv2d_backward_filter(dy, x, p, dw, &db);
    CHECK(max_abs(dw) > 0);
    CHECK(max_abs(db) > 0);

    // Twice into buffers that start at 0.5: 0.5 + 2 * (one pass).
    Tensor dw2 = Tensor::full(c.w_shape(), 0.5, DType::F64), db2 = Tensor::full({c.cout}, 0.5, DType::F64);
    ops::conv2d_backward_filter(dy, x, p, dw2, &db2);
    ops::conv2d_backward_filter(dy, x, p, dw2, &db2);
    Tensor dw_want = Tensor::full(c.w_shape(), 0.5, DType::F64), db_want = Tensor::full({c.cout}, 0.5, DType::F64);
    ops::axpy(2.0, dw, dw_want);
    ops::axpy(2.0, db, db_want);
    CHECK(test::closeness(dw2, dw_want, 1e-12, 1e-12) <= 1.0);
    CHECK(test::closeness(db2, db_want, 1e-12, 1e-12) <= 1.0);
  }
}

TEST_CASE("conv2d rejects bad arguments with a message naming the op and the shapes") {
  const Tensor x = Tensor::zeros({2, 5, 8, 9});
  const Tensor w = Tensor::zeros({6, 5, 3, 3});
  const ConvParams same{1, 1, 1};

  SUBCASE("channel mismatch") {
    const Tensor w4 = Tensor::zeros({6, 4, 3, 3});
    Tensor y = Tensor::zeros({2, 6, 8, 9});
    check_error([&] { ops::conv2d_forward(x, w4, nullptr, same, y); },
                {"conv2d", "[2, 5, 8, 9]", "[6, 4, 3, 3]"});
    Tensor dx = Tensor::zeros({2, 5, 8, 9});
    check_error([&] { ops::conv2d_backward_data(y, w4, same, dx, false); },
                {"conv2d", "[2, 5, 8, 9]", "[6, 4, 3, 3]"});
  }
  SUBCASE("dilation too large for the input") {
    const ConvParams wide{1, 0, 5};  // a 3x3 kernel spans 11x11 > 8x9
    Tensor y = Tensor::zeros({2, 6, 1, 1});
    check_error([&] { ops::conv2d_forward(x, w, nullptr, wide, y); },
                {"conv2d", "dilation 5", "[2, 5, 8, 9]"});
    Tensor dw = Tensor::zeros({6, 5, 3, 3});
    check_error([&] { ops::conv2d_backward_filter(y, x, wide, dw, nullptr); },
                {"conv2d", "dilation 5", "[2, 5, 8, 9]"});
  }
  SUBCASE("wrong output shape") {
    Tensor y = Tensor::zeros({2, 6, 8, 8});
    check_error([&] { ops::conv2d_forward(x, w, nullptr, same, y); },
                {"conv2d_forward", "[2, 6, 8, 8]", "[2, 6, 8, 9]"});
    Tensor dx = Tensor::zeros({2, 5, 8, 9});
    check_error([&] { ops::conv2d_backward_data(y, w, same, dx, false); },
                {"conv2d_backward_data", "[2, 6, 8, 8]", "[2, 6, 8, 9]"});
    Tensor dw = Tensor::zeros({6, 5, 3, 3}), db = Tensor::zeros({5});
    Tensor dy = Tensor::zeros({2, 6, 8, 9});
    check_error([&] { ops::conv2d_backward_filter(dy, x, same, dw, &db); },
                {"conv2d_backward_filter", "dbias", "[5]"});
  }
  SUBCASE("mixed dtypes") {
    const Tensor w64 = Tensor::zeros({6, 5, 3, 3}, DType::F64);
    Tensor y = Tensor::zeros({2, 6, 8, 9});
    check_error([&] { ops::conv2d_forward(x, w64, nullptr, same, y); },
                {"conv2d_forward", "weight", "f64"});
  }
}

// The inference form's fused ReLU (ConvParams::relu) must be exactly relu(conv):
// the same sums, then max(., 0) as the values are stored, on every CPU path
// (im2col bands, the 1x1 gemm, Winograd) and in bf16, whose f32 result is
// rounded after the ReLU instead of before (the same value: rounding keeps sign
// and zero).
TEST_CASE("conv2d with a fused ReLU equals relu(conv2d) bit for bit, and has no backward") {
  for_each_winograd_tile([&] {
    for (const Config& c : grid()) {
      for (const DType dtype : {DType::F32, DType::F64, DType::BF16}) {
        const std::string what = c.str() + " " + to_string(dtype);
        INFO(what);
        ConvParams p = c.params(), fused = p;
        fused.relu = true;
        const Tensor x = test::randn(c.x_shape(), 11, DType::F32).to(dtype);
        const Tensor w = test::randn(c.w_shape(), 12, DType::F32, 0.3).to(dtype);
        const Tensor bias = test::randn({c.cout}, 13, DType::F32).to(dtype);
        const Tensor* b = c.bias ? &bias : nullptr;
        Tensor plain = Tensor::full(c.y_shape(), NAN, dtype), want = Tensor::full(c.y_shape(), NAN, dtype);
        Tensor got = Tensor::full(c.y_shape(), NAN, dtype);
        ops::conv2d_forward(x, w, b, p, plain);
        ops::relu_forward(plain, want);
        ops::conv2d_forward(x, w, b, fused, got);
        const std::vector<double> g = got.to(DType::F64).to_vector_f64(), r = want.to(DType::F64).to_vector_f64();
        CHECK(g == r);
        CHECK(std::count_if(r.begin(), r.end(), [](double v) { return v == 0; }) > 0);  // the ReLU did cut
        if (dtype == DType::F64) {  // the reference loops fuse it the same way
          Tensor direct = Tensor::empty(c.y_shape(), dtype), direct_plain = Tensor::empty(c.y_shape(), dtype);
          cpu::direct::conv2d_forward(x, w, b, fused, direct);
          cpu::direct::conv2d_forward(x, w, b, p, direct_plain);
          std::vector<double> want_direct = direct_plain.to_vector_f64();
          for (double& v : want_direct) v = v > 0 ? v : 0;
          CHECK(direct.to_vector_f64() == want_direct);
        }
      }
    }
  });

  SUBCASE("NaN becomes 0, as relu_forward makes it") {
    Tensor x = Tensor::zeros({1, 1, 6, 6});
    x.data<float>()[14] = NAN;
    const Tensor w = Tensor::full({1, 1, 3, 3}, 1.0);
    ConvParams fused = ConvParams::same(3);
    fused.relu = true;
    Tensor y = Tensor::full({1, 1, 6, 6}, -1.0);
    ops::conv2d_forward(x, w, nullptr, fused, y);
    for (double v : y.to_vector_f64()) CHECK(v == 0);
  }

  SUBCASE("the backward ops and the tape refuse it") {
    ConvParams fused = ConvParams::same(3);
    fused.relu = true;
    const Tensor x = test::randn({1, 2, 5, 5}, 1), w = test::randn({3, 2, 3, 3}, 2);
    Tensor dy = Tensor::zeros({1, 3, 5, 5}), dx = Tensor::zeros({1, 2, 5, 5}), dw = Tensor::zeros({3, 2, 3, 3});
    check_error([&] { ops::conv2d_backward_data(dy, w, fused, dx, false); }, {"conv2d_backward_data", "forward only"});
    check_error([&] { ops::conv2d_backward_filter(dy, x, fused, dw, nullptr); },
                {"conv2d_backward_filter", "forward only"});
    ag::Tape tape;
    const ag::Var xv(x, true), wv(w, true);
    check_error([&] { ag::conv2d(xv, wv, ag::Var(), fused); }, {"conv2d", "no backward"});
    ag::NoGrad no_grad;  // without a tape it runs
    CHECK(ag::conv2d(xv, wv, ag::Var(), fused).value().shape() == Shape{1, 3, 5, 5});
  }
}
