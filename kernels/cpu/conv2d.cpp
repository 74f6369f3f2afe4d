// The CPU convolution: im2col + OpenBLAS gemm. The three passes of 3x3
// stride-1 layers (most of COVID-Rate) go to Winograd's algorithm instead
// (conv2d_winograd.cpp), which needs 2.25x fewer flops.
//
// For one image, the convolution is a matrix product once the input is unrolled
// into the "column" matrix col[(ci, kh, kw)][(oh, ow)] = x[ci, ih, iw] (0 in the
// padding), with K = Cin*KH*KW rows and one column per output pixel:
//   forward          y[Cout, Ho*Wo]  = W[Cout, K] * col[K, Ho*Wo]
//   backward data    dcol[K, Ho*Wo]  = W^T * dy, then col2im adds dcol back into dx
//   backward filter  dW[Cout, K]    += dy[Cout, Ho*Wo] * col^T
// A 1x1, stride-1, unpadded convolution needs no unrolling: col is x itself.
//
// col is KH x KW times larger than the image (9x for 3x3: 302 MB for 128 channels
// at 256x256, in float), so it is only ever built for a band of output rows: about
// kBandColumns pixels, which keeps the band in the core's cache between im2col
// and the gemm that reads it, and is where single-threaded sgemm runs fastest
// on these shapes. The scratch space is per calling thread, bounded by
// kColumnBytes and only grows, so steady-state training allocates nothing.
//
// Threads (num_threads(), each gemm single-threaded, see threads.h) split work
// that never writes the same memory:
//   forward          bands of output rows (and images): each thread unrolls its
//                    own bands and writes its own rows of y;
//   backward data    input channels: each thread computes the dcol rows of its
//                    channels and adds them into its own planes of dx;
//   backward filter  input channels: each thread unrolls the col rows of its
//                    channels and accumulates its own columns of dW.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/bf16_reference.h"
#include "kernels/cpu/conv2d_gemm.h"
#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/threads.h"

namespace covidrate::cpu {

namespace {

// Output pixels per band (rounded to whole rows). Single-threaded sgemm with
// M = Cout and K = Cin*9 peaks at a few hundred columns here (measured on the
// COVID-Rate shapes: 92 GFLOP/s at 256-512 columns, 76 at 4096).
constexpr int64_t kBandColumns = 512;
// Upper bound of all column scratch of one call, every thread's band together.
constexpr size_t kColumnBytes = size_t{64} << 20;

// The sizes of one convolution, per image.
struct Geometry {
  int64_t cin, h, w;    // input planes
  int64_t cout, kh, kw; // weight
  int64_t ho, wo;       // output planes
  int64_t stride, pad, dil;

  Geometry(const Shape& x, const Shape& weight, const Shape& y, const ConvParams& p)
      : cin(x.c()), h(x.h()), w(x.w()), cout(weight.n()), kh(weight.h()), kw(weight.w()),
        ho(y.h()), wo(y.w()), stride(p.stride), pad(p.pad), dil(p.dilation) {}

  int64_t taps() const { return kh * kw; }
  int64_t k() const { return cin * taps(); }  // rows of the column matrix
  int64_t in_plane() const { return h * w; }
  int64_t out_plane() const { return ho * wo; }
  // The column matrix would be x itself.
  bool pointwise() const { return kh == 1 && kw == 1 && stride == 1 && pad == 0; }

  // Output rows per band: about kBandColumns pixels, at least one row, fewer
  // if `bands_at_once` bands of K rows would not fit in kColumnBytes.
  template <class T> int64_t band_rows(int64_t bands_at_once) const {
    const int64_t wanted = (kBandColumns + wo - 1) / wo;
    const auto row_bytes = static_cast<size_t>(k() * wo * bands_at_once) * sizeof(T);
    const auto fitting = static_cast<int64_t>(kColumnBytes / row_bytes);
    return std::clamp<int64_t>(std::min(wanted, fitting), 1, ho);
  }

  // Output columns ow in [lo, hi) read input column ow*stride + offset inside [0, w);
  // offset = kw_index*dil - pad. Those outside read the zero padding.
  void valid_columns(int64_t offset, int64_t& lo, int64_t& hi) const {
    lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    hi = w - offset <= 0 ? 0 : std::min(wo, (w - offset - 1) / stride + 1);
    lo = std::min(lo, wo);
    hi = std::max(hi, lo);
  }
};

// col[(c - c0, kh, kw)][(oh - r0, ow)] for channels [c0, c1) and output rows
// [r0, r1) of one image x.
template <class T>
void im2col(const Geometry& g, const T* x, int64_t c0, int64_t c1, int64_t r0, int64_t r1, T* col) {
  const int64_t cols = (r1 - r0) * g.wo;
  for (int64_t row = 0; row < (c1 - c0) * g.taps(); ++row, col += cols) {
    const int64_t ci = c0 + row / g.taps(), i = row / g.kw % g.kh, j = row % g.kw;
    const T* plane = x + ci * g.in_plane();
    const int64_t offset = j * g.dil - g.pad;
    int64_t lo, hi;
    g.valid_columns(offset, lo, hi);
    T* dst = col;
    for (int64_t oh = r0; oh < r1; ++oh, dst += g.wo) {
      const int64_t ih = oh * g.stride - g.pad + i * g.dil;
      if (ih < 0 || ih >= g.h) {
        std::fill_n(dst, g.wo, T(0));
        continue;
      }
      const T* src = plane + ih * g.w;
      std::fill_n(dst, lo, T(0));
      if (g.stride == 1) {
        std::memcpy(dst + lo, src + lo + offset, static_cast<size_t>(hi - lo) * sizeof(T));
      } else {
        for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = src[ow * g.stride + offset];
      }
      std::fill_n(dst + hi, g.wo - hi, T(0));
    }
  }
}

// The transpose of im2col: dx[c] += every col entry that was read from x[c],
// for channels [c0, c1) and output rows [r0, r1).
template <class T>
void col2im(const Geometry& g, const T* col, int64_t c0, int64_t c1, int64_t r0, int64_t r1, T* dx) {
  const int64_t cols = (r1 - r0) * g.wo;
  for (int64_t row = 0; row < (c1 - c0) * g.taps(); ++row, col += cols) {
    const int64_t ci = c0 + row / g.taps(), i = row / g.kw % g.kh, j = row % g.kw;
    T* plane = dx + ci * g.in_plane();
    const int64_t offset = j * g.dil - g.pad;
    int64_t lo, hi;
    g.valid_columns(offset, lo, hi);
    const T* src = col;
    for (int64_t oh = r0; oh < r1; ++oh, src += g.wo) {
      const int64_t ih = oh * g.stride - g.pad + i * g.dil;
      if (ih < 0 || ih >= g.h) continue;
      T* dst = plane + ih * g.w;
      for (int64_t ow = lo; ow < hi; ++ow) dst[ow * g.stride + offset] += src[ow];
    }
  }
}

template <class T> void forward(const Tensor& x, const Tensor& w, const Tensor* bias,
                                const ConvParams& p, Tensor& y) {
  const Geometry g(x.shape(), w.shape(), y.shape(), p);
  const T* xs = x.data<T>();
  const T* ws = w.data<T>();
  const T* bs = bias ? bias->data<T>() : nullptr;
  T* ys = y.data<T>();
  // Work items are (image, band) pairs; each thread takes a run of them. Small
  // images get thinner bands, so that every thread still has one.
  const int64_t per_thread = (x.n() * g.ho + num_threads() - 1) / num_threads();
  const int64_t rows = std::min(g.band_rows<T>(num_threads()), per_thread);
  const int64_t bands = (g.ho + rows - 1) / rows;
  const int64_t chunks = chunk_count(x.n() * bands, 1);
  const auto band_size = static_cast<size_t>(g.k() * rows * g.wo);
  T* scratch = g.pointwise() ? nullptr : scratch_buffer<T>(band_size * static_cast<size_t>(chunks));
  parallel_chunks(x.n() * bands, chunks, [&](int64_t chunk, int64_t begin, int64_t end) {
    T* col = scratch + band_size * static_cast<size_t>(chunk);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / bands, r0 = item % bands * rows, r1 = std::min(g.ho, r0 + rows);
      const int64_t cols = (r1 - r0) * g.wo;
      const T* xb = xs + b * g.cin * g.in_plane();
      T* out = ys + b * g.cout * g.out_plane() + r0 * g.wo;
      if (g.pointwise()) {
        gemm(false, false, g.cout, cols, g.k(), T(1), ws, g.k(), xb + r0 * g.wo, g.in_plane(), T(0),
             out, g.out_plane());
      } else {
        im2col(g, xb, 0, g.cin, r0, r1, col);
        gemm(false, false, g.cout, cols, g.k(), T(1), ws, g.k(), col, cols, T(0), out, g.out_plane());
      }
      // The bias and the fused ReLU go in while this band of y is still in cache.
      for (int64_t co = 0; (bs || p.relu) && co < g.cout; ++co) {
        T* row = out + co * g.out_plane();
        const T shift = bs ? bs[co] : T(0);
        if (p.relu) {
          for (int64_t q = 0; q < cols; ++q) row[q] = row[q] + shift > T(0) ? row[q] + shift : T(0);
        } else {
          for (int64_t q = 0; q < cols; ++q) row[q] += shift;
        }
      }
    }
  });
}

template <class T> void backward_data(const Tensor& dy, const Tensor& w, const ConvParams& p,
                                      Tensor& dx, bool accumulate) {
  const Geometry g(dx.shape(), w.shape(), dy.shape(), p);
  const T* dys = dy.data<T>();
  const T* ws = w.data<T>();
  T* dxs = dx.data<T>();
  const int64_t rows = g.band_rows<T>(1);
  const int64_t chunks = chunk_count(g.cin, 1);
  // One band of dcol; thread `chunk` fills the rows of its channels [c0, c1).
  T* scratch = g.pointwise() ? nullptr : scratch_buffer<T>(static_cast<size_t>(g.k() * rows * g.wo));
  parallel_chunks(g.cin, chunks, [&](int64_t, int64_t c0, int64_t c1) {
    // Columns c0*taps .. c1*taps of W are the rows of W^T this thread needs.
    const T* w_rows = ws + c0 * g.taps();
    const int64_t m = (c1 - c0) * g.taps();
    T* dcol = scratch ? scratch + c0 * g.taps() * rows * g.wo : nullptr;
    for (int64_t b = 0; b < dx.n(); ++b) {
      const T* dyb = dys + b * g.cout * g.out_plane();
      T* dxb = dxs + b * g.cin * g.in_plane();
      if (g.pointwise()) {
        // dx = W^T dy directly; beta 0 never reads dx, so a poisoned buffer is fine.
        gemm(true, false, m, g.in_plane(), g.cout, T(1), w_rows, g.k(), dyb, g.out_plane(),
             accumulate ? T(1) : T(0), dxb + c0 * g.in_plane(), g.in_plane());
        continue;
      }
      // col2im adds, so overwriting starts from zero (pixels no tap reaches stay 0).
      if (!accumulate) std::fill(dxb + c0 * g.in_plane(), dxb + c1 * g.in_plane(), T(0));
      for (int64_t r0 = 0; r0 < g.ho; r0 += rows) {
        const int64_t r1 = std::min(g.ho, r0 + rows);
        const int64_t cols = (r1 - r0) * g.wo;
        gemm(true, false, m, cols, g.cout, T(1), w_rows, g.k(), dyb + r0 * g.wo, g.out_plane(),
             T(0), dcol, cols);
        col2im(g, dcol, c0, c1, r0, r1, dxb);
      }
    }
  });
}

template <class T> void backward_filter(const Tensor& dy, const Tensor& x, const ConvParams& p,
                                        Tensor& dw) {
  const Geometry g(x.shape(), dw.shape(), dy.shape(), p);
  const T* dys = dy.data<T>();
  const T* xs = x.data<T>();
  T* dws = dw.data<T>();
  const int64_t rows = g.band_rows<T>(1);
  const int64_t chunks = chunk_count(g.cin, 1);
  T* scratch = g.pointwise() ? nullptr : scratch_buffer<T>(static_cast<size_t>(g.k() * rows * g.wo));
  // Thread `chunk` owns the columns c0*taps .. c1*taps of dW.
  parallel_chunks(g.cin, chunks, [&](int64_t, int64_t c0, int64_t c1) {
    const int64_t n = (c1 - c0) * g.taps();
    T* dw_cols = dws + c0 * g.taps();
    T* col = scratch ? scratch + c0 * g.taps() * rows * g.wo : nullptr;
    for (int64_t b = 0; b < x.n(); ++b) {
      const T* xb = xs + b * g.cin * g.in_plane();
      const T* dyb = dys + b * g.cout * g.out_plane();
      if (g.pointwise()) {
        gemm(false, true, g.cout, n, g.out_plane(), T(1), dyb, g.out_plane(), xb + c0 * g.in_plane(),
             g.in_plane(), T(1), dw_cols, g.k());
        continue;
      }
      for (int64_t r0 = 0; r0 < g.ho; r0 += rows) {
        const int64_t r1 = std::min(g.ho, r0 + rows);
        const int64_t cols = (r1 - r0) * g.wo;
        im2col(g, xb, c0, c1, r0, r1, col);
        gemm(false, true, g.cout, n, cols, T(1), dyb + r0 * g.wo, g.out_plane(), col, cols, T(1),
             dw_cols, g.k());
      }
    }
  });
}

// dbias[co] += the sum of dy over images and pixels, in double: a plane holds
// up to 262,144 values of mixed sign (512 x 512), times the batch.
template <class T> void bias_gradient(const Tensor& dy, Tensor& dbias) {
  const T* dys = dy.data<T>();
  T* dbs = dbias.data<T>();
  const int64_t plane = dy.h() * dy.w();
  // Each channel's sum stays on one thread: the same bits for any thread count.
  parallel_for(dy.c(), units_per_grain(dy.n() * plane), [&](int64_t begin, int64_t end) {
    for (int64_t co = begin; co < end; ++co) {
      double sum = 0;
      for (int64_t b = 0; b < dy.n(); ++b) {
        const T* values = dys + (b * dy.c() + co) * plane;
        sum += sum_in_double(plane, [&](int64_t q) { return double{values[q]}; });
      }
      dbs[co] = static_cast<T>(dbs[co] + sum);
    }
  });
}

}  // namespace

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const ConvParams& p,
                    Tensor& y) {
  if (is_bf16(x)) {
    const Tensor bias32 = widened(bias);
    return bf16_via_f32(y, [&](Tensor& y32) {
      conv2d_forward(widened(x), widened(w), bias ? &bias32 : nullptr, p, y32);
    });
  }
  if (winograd_forward_applies(w, p)) return winograd_forward(x, w, bias, p, y);
  if (x.dtype() == DType::F64) return forward<double>(x, w, bias, p, y);
  forward<float>(x, w, bias, p, y);
}

void conv2d_backward_data(const Tensor& dy, const Tensor& w, const ConvParams& p, Tensor& dx,
                          bool accumulate) {
  if (winograd_applies(w, p)) return winograd_backward_data(dy, w, p, dx, accumulate);
  if (dy.dtype() == DType::F64) return backward_data<double>(dy, w, p, dx, accumulate);
  backward_data<float>(dy, w, p, dx, accumulate);
}

void conv2d_backward_filter(const Tensor& dy, const Tensor& x, const ConvParams& p, Tensor& dw,
                            Tensor* dbias) {
  const bool f64 = dy.dtype() == DType::F64;
  if (winograd_applies(dw, p)) {
    winograd_backward_filter(dy, x, p, dw);
  } else if (f64) {
    backward_filter<double>(dy, x, p, dw);
  } else {
    backward_filter<float>(dy, x, p, dw);
  }
  if (!dbias) return;
  if (f64) return bias_gradient<double>(dy, *dbias);
  bias_gradient<float>(dy, *dbias);
}

}  // namespace covidrate::cpu
