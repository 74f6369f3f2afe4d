// Every loop of the definition, nothing clever:
//   y[n,co,oh,ow] = bias[co] + sum_{ci,kh,kw} w[co,ci,kh,kw] * x[n,ci,ih,iw]
//   with ih = oh*stride - pad + kh*dilation, iw = ow*stride - pad + kw*dilation,
//   and x = 0 outside the image.
// The two backward passes walk the same loops and send each product the other way.
#include "kernels/cpu/conv2d_direct.h"

#include <vector>

namespace covidrate::cpu::direct {

namespace {

// The index arithmetic shared by the three passes.
struct Geometry {
  int64_t n, cin, h, w;       // input
  int64_t cout, kh, kw;       // weight
  int64_t ho, wo;             // output
  int64_t stride, pad, dil;

  Geometry(const Shape& x, const Shape& weight, const Shape& y, const ConvParams& p)
      : n(x.n()), cin(x.c()), h(x.h()), w(x.w()), cout(weight.n()), kh(weight.h()),
        kw(weight.w()), ho(y.h()), wo(y.w()), stride(p.stride), pad(p.pad), dil(p.dilation) {}

  int64_t x_at(int64_t b, int64_t c, int64_t i, int64_t j) const { return ((b * cin + c) * h + i) * w + j; }
  int64_t y_at(int64_t b, int64_t c, int64_t i, int64_t j) const { return ((b * cout + c) * ho + i) * wo + j; }
  int64_t w_at(int64_t o, int64_t c, int64_t i, int64_t j) const { return ((o * cin + c) * kh + i) * kw + j; }

  // Calls f(x index, y index, w index) for every (input pixel, output pixel, tap)
  // triple that the convolution multiplies together.
  template <class F> void for_each_product(F&& f) const {
    for (int64_t b = 0; b < n; ++b)
      for (int64_t co = 0; co < cout; ++co)
        for (int64_t oh = 0; oh < ho; ++oh)
          for (int64_t ow = 0; ow < wo; ++ow)
            for (int64_t ci = 0; ci < cin; ++ci)
              for (int64_t i = 0; i < kh; ++i)
                for (int64_t j = 0; j < kw; ++j) {
                  const int64_t ih = oh * stride - pad + i * dil;
                  const int64_t iw = ow * stride - pad + j * dil;
                  if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                  f(x_at(b, ci, ih, iw), y_at(b, co, oh, ow), w_at(co, ci, i, j));
                }
  }
};

template <class T> void forward(const Tensor& x, const Tensor& w, const Tensor* bias,
                                const ConvParams& p, Tensor& y) {
  const Geometry g(x.shape(), w.shape(), y.shape(), p);
  const T* xs = x.data<T>();
  const T* ws = w.data<T>();
  std::vector<double> acc(static_cast<size_t>(y.numel()), 0.0);
  g.for_each_product([&](int64_t xi, int64_t yi, int64_t wi) { acc[yi] += double(ws[wi]) * xs[xi]; });
  T* ys = y.data<T>();
  for (int64_t yi = 0; yi < y.numel(); ++yi) {
    const int64_t co = yi / (g.ho * g.wo) % g.cout;
    const double v = acc[yi] + (bias ? double(bias->data<T>()[co]) : 0.0);
    ys[yi] = static_cast<T>(p.relu && !(v > 0) ? 0.0 : v);
  }
}

template <class T> void backward_data(const Tensor& dy, const Tensor& w, const ConvParams& p,
                                      Tensor& dx, bool accumulate) {
  const Geometry g(dx.shape(), w.shape(), dy.shape(), p);
  const T* dys = dy.data<T>();
  const T* ws = w.data<T>();
  std::vector<double> acc(static_cast<size_t>(dx.numel()), 0.0);
  g.for_each_product([&](int64_t xi, int64_t yi, int64_t wi) { acc[xi] += double(ws[wi]) * dys[yi]; });
  T* dxs = dx.data<T>();
  for (int64_t i = 0; i < dx.numel(); ++i) {
    dxs[i] = accumulate ? static_cast<T>(dxs[i] + acc[i]) : static_cast<T>(acc[i]);
  }
}

template <class T> void backward_filter(const Tensor& dy, const Tensor& x, const ConvParams& p,
                                        Tensor& dw, Tensor* dbias) {
  const Geometry g(x.shape(), dw.shape(), dy.shape(), p);
  const T* dys = dy.data<T>();
  const T* xs = x.data<T>();
  std::vector<double> acc(static_cast<size_t>(dw.numel()), 0.0);
  g.for_each_product([&](int64_t xi, int64_t yi, int64_t wi) { acc[wi] += double(dys[yi]) * xs[xi]; });
  T* dws = dw.data<T>();
  for (int64_t i = 0; i < dw.numel(); ++i) dws[i] = static_cast<T>(dws[i] + acc[i]);
  if (!dbias) return;
  T* dbs = dbias->data<T>();
  for (int64_t co = 0; co < g.cout; ++co) {
    double sum = 0;
    for (int64_t b = 0; b < g.n; ++b)
      for (int64_t k = 0; k < g.ho * g.wo; ++k) sum += dys[(b * g.cout + co) * g.ho * g.wo + k];
    dbs[co] = static_cast<T>(dbs[co] + sum);
  }
}

}  // namespace

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const ConvParams& p,
                    Tensor& y) {
  if (x.dtype() == DType::F64) return forward<double>(x, w, bias, p, y);
  forward<float>(x, w, bias, p, y);
}
void conv2d_backward_data(const Tensor& dy, const Tensor& w, const ConvParams& p, Tensor& dx,
                          bool accumulate) {
  if (dy.dtype() == DType::F64) return backward_data<double>(dy, w, p, dx, accumulate);
  backward_data<float>(dy, w, p, dx, accumulate);
}
void conv2d_backward_filter(const Tensor& dy, const Tensor& x, const ConvParams& p, Tensor& dw,
                            Tensor* dbias) {
  if (dy.dtype() == DType::F64) return backward_filter<double>(dy, x, p, dw, dbias);
  backward_filter<float>(dy, x, p, dw, dbias);
}

}  // namespace covidrate::cpu::direct
