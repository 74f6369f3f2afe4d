// The CPU convolution: im2col + OpenBLAS gemm, one image at a time.
//
// For one image, the convolution is a matrix product once the input is unrolled
// into the "column" matrix col[(ci, kh, kw)][(oh, ow)] = x[ci, ih, iw] (0 in the
// padding), with K = Cin*KH*KW rows and one column per output pixel:
//   forward          y[Cout, Ho*Wo]  = W[Cout, K] * col[K, Ho*Wo]
//   backward data    dcol[K, Ho*Wo]  = W^T * dy, then col2im adds dcol back into dx
//   backward filter  dW[Cout, K]    += dy[Cout, Ho*Wo] * col^T
// A 1x1, stride-1, unpadded convolution needs no unrolling: col is x itself.
//
// col is K times larger than the image (302 MB for 128 channels at 256x256 with
// 3x3 in float), so it is built for a band of output rows at a time, bounded by
// kColumnBytes. Besides bounding memory, a band that fits in the last-level
// cache is read back by the gemm while still hot. The buffer is per calling
// thread and only grows, so steady-state training allocates nothing here.
//
// Threads: OpenBLAS runs each gemm on num_threads() threads; im2col and col2im
// are split over the same number of threads with parallel_for (they alternate
// with the gemm, so the two never compete for cores).
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/threads.h"

namespace covidrate::cpu {

namespace {

// Upper bound of the column band; see the header comment. 8 MB keeps the band
// within a typical L3 slice while leaving the gemm thousands of columns.
constexpr size_t kColumnBytes = size_t{8} << 20;

// im2col/col2im rows handed to one thread at least (a row is one band of Wo*rows values).
constexpr int64_t kMinRowsPerThread = 16;

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
          int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

// The column band of the calling thread, grown on demand and kept between calls.
template <class T> T* column_buffer(size_t count) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < count) {
    buffer = std::vector<T>();  // release the old one first: peak memory stays one buffer
    buffer.resize(count);
  }
  return buffer.data();
}

// The sizes of one convolution, per image.
struct Geometry {
  int64_t cin, h, w;    // input planes
  int64_t cout, kh, kw; // weight
  int64_t ho, wo;       // output planes
  int64_t stride, pad, dil;

  Geometry(const Shape& x, const Shape& weight, const Shape& y, const ConvParams& p)
      : cin(x.c()), h(x.h()), w(x.w()), cout(weight.n()), kh(weight.h()), kw(weight.w()),
        ho(y.h()), wo(y.w()), stride(p.stride), pad(p.pad), dil(p.dilation) {}

  int64_t k() const { return cin * kh * kw; }  // rows of the column matrix
  int64_t in_plane() const { return h * w; }
  int64_t out_plane() const { return ho * wo; }
  // The column matrix would be x itself.
  bool pointwise() const { return kh == 1 && kw == 1 && stride == 1 && pad == 0; }

  // Output rows per column band: as many as kColumnBytes allows, at least one.
  template <class T> int64_t band_rows() const {
    const auto row_bytes = static_cast<size_t>(k() * wo) * sizeof(T);
    return std::clamp<int64_t>(static_cast<int64_t>(kColumnBytes / row_bytes), 1, ho);
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

// col[K, (r1-r0)*Wo] for output rows [r0, r1) of one image.
template <class T> void im2col(const Geometry& g, const T* x, int64_t r0, int64_t r1, T* col) {
  const int64_t cols = (r1 - r0) * g.wo;
  parallel_for(g.k(), kMinRowsPerThread, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t ci = row / (g.kh * g.kw), i = row / g.kw % g.kh, j = row % g.kw;
      const T* plane = x + ci * g.in_plane();
      const int64_t offset = j * g.dil - g.pad;
      int64_t lo, hi;
      g.valid_columns(offset, lo, hi);
      T* dst = col + row * cols;
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
  });
}

// dx += col2im(col) for output rows [r0, r1) of one image. Threads split the
// input channels, so no two threads add into the same pixel.
template <class T> void col2im(const Geometry& g, const T* col, int64_t r0, int64_t r1, T* dx) {
  const int64_t cols = (r1 - r0) * g.wo;
  const int64_t min_channels = std::max<int64_t>(1, kMinRowsPerThread / (g.kh * g.kw));
  parallel_for(g.cin, min_channels, [&](int64_t begin, int64_t end) {
    for (int64_t ci = begin; ci < end; ++ci) {
      T* plane = dx + ci * g.in_plane();
      for (int64_t i = 0; i < g.kh; ++i) {
        for (int64_t j = 0; j < g.kw; ++j) {
          const int64_t offset = j * g.dil - g.pad;
          int64_t lo, hi;
          g.valid_columns(offset, lo, hi);
          const T* src = col + ((ci * g.kh + i) * g.kw + j) * cols;
          for (int64_t oh = r0; oh < r1; ++oh, src += g.wo) {
            const int64_t ih = oh * g.stride - g.pad + i * g.dil;
            if (ih < 0 || ih >= g.h) continue;
            T* dst = plane + ih * g.w;
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow * g.stride + offset] += src[ow];
          }
        }
      }
    }
  });
}

template <class T> void forward(const Tensor& x, const Tensor& w, const Tensor* bias,
                                const ConvParams& p, Tensor& y) {
  const Geometry g(x.shape(), w.shape(), y.shape(), p);
  const T* ws = w.data<T>();
  const T* bs = bias ? bias->data<T>() : nullptr;
  const int64_t band = g.band_rows<T>();
  // y[:, band] = W * rhs + bias, the bias added while the band of y is still in cache.
  auto multiply = [&](const T* rhs, int64_t cols, T* out) {
    gemm(false, false, g.cout, cols, g.k(), T(1), ws, g.k(), rhs, cols, T(0), out, g.out_plane());
    for (int64_t co = 0; bs && co < g.cout; ++co) {
      T* row = out + co * g.out_plane();
      for (int64_t q = 0; q < cols; ++q) row[q] += bs[co];
    }
  };
  T* col = g.pointwise() ? nullptr : column_buffer<T>(static_cast<size_t>(g.k() * band * g.wo));
  for (int64_t b = 0; b < x.n(); ++b) {
    const T* xb = x.data<T>() + b * g.cin * g.in_plane();
    T* yb = y.data<T>() + b * g.cout * g.out_plane();
    if (g.pointwise()) {
      multiply(xb, g.in_plane(), yb);
      continue;
    }
    for (int64_t r0 = 0; r0 < g.ho; r0 += band) {
      const int64_t r1 = std::min(g.ho, r0 + band);
      im2col(g, xb, r0, r1, col);
      multiply(col, (r1 - r0) * g.wo, yb + r0 * g.wo);
    }
  }
}

template <class T> void backward_data(const Tensor& dy, const Tensor& w, const ConvParams& p,
                                      Tensor& dx, bool accumulate) {
  const Geometry g(dx.shape(), w.shape(), dy.shape(), p);
  const T* ws = w.data<T>();
  for (int64_t b = 0; b < dx.n(); ++b) {
    const T* dyb = dy.data<T>() + b * g.cout * g.out_plane();
    T* dxb = dx.data<T>() + b * g.cin * g.in_plane();
    if (g.pointwise()) {
      // dx = W^T dy directly; beta 0 never reads dx, so a poisoned buffer is fine.
      gemm(true, false, g.cin, g.in_plane(), g.cout, T(1), ws, g.cin, dyb, g.out_plane(),
           accumulate ? T(1) : T(0), dxb, g.in_plane());
      continue;
    }
    // col2im adds, so overwriting starts from zero (pixels no tap reaches stay 0).
    if (!accumulate) std::fill_n(dxb, g.cin * g.in_plane(), T(0));
    const int64_t band = g.band_rows<T>();
    T* col = column_buffer<T>(static_cast<size_t>(g.k() * band * g.wo));
    for (int64_t r0 = 0; r0 < g.ho; r0 += band) {
      const int64_t r1 = std::min(g.ho, r0 + band);
      const int64_t cols = (r1 - r0) * g.wo;
      gemm(true, false, g.k(), cols, g.cout, T(1), ws, g.k(), dyb + r0 * g.wo, g.out_plane(), T(0),
           col, cols);
      col2im(g, col, r0, r1, dxb);
    }
  }
}

template <class T> void backward_filter(const Tensor& dy, const Tensor& x, const ConvParams& p,
                                        Tensor& dw, Tensor* dbias) {
  const Geometry g(x.shape(), dw.shape(), dy.shape(), p);
  T* dws = dw.data<T>();
  const int64_t band = g.band_rows<T>();
  T* col = g.pointwise() ? nullptr : column_buffer<T>(static_cast<size_t>(g.k() * band * g.wo));
  for (int64_t b = 0; b < x.n(); ++b) {
    const T* xb = x.data<T>() + b * g.cin * g.in_plane();
    const T* dyb = dy.data<T>() + b * g.cout * g.out_plane();
    if (g.pointwise()) {
      gemm(false, true, g.cout, g.cin, g.out_plane(), T(1), dyb, g.out_plane(), xb, g.in_plane(),
           T(1), dws, g.cin);
    } else {
      for (int64_t r0 = 0; r0 < g.ho; r0 += band) {
        const int64_t r1 = std::min(g.ho, r0 + band);
        const int64_t cols = (r1 - r0) * g.wo;
        im2col(g, xb, r0, r1, col);
        gemm(false, true, g.cout, g.k(), cols, T(1), dyb + r0 * g.wo, g.out_plane(), col, cols,
             T(1), dws, g.k());
      }
    }
    if (!dbias) continue;
    // Summed in double: a plane holds up to 65536 values of mixed sign.
    T* dbs = dbias->data<T>();
    for (int64_t co = 0; co < g.cout; ++co) {
      const T* plane = dyb + co * g.out_plane();
      double sum = 0;
      for (int64_t q = 0; q < g.out_plane(); ++q) sum += plane[q];
      dbs[co] = static_cast<T>(dbs[co] + sum);
    }
  }
}

}  // namespace

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const ConvParams& p,
                    Tensor& y) {
  num_threads();  // applies COVIDRATE_THREADS to OpenBLAS before the first gemm
  if (x.dtype() == DType::F64) return forward<double>(x, w, bias, p, y);
  forward<float>(x, w, bias, p, y);
}

void conv2d_backward_data(const Tensor& dy, const Tensor& w, const ConvParams& p, Tensor& dx,
                          bool accumulate) {
  num_threads();
  if (dy.dtype() == DType::F64) return backward_data<double>(dy, w, p, dx, accumulate);
  backward_data<float>(dy, w, p, dx, accumulate);
}

void conv2d_backward_filter(const Tensor& dy, const Tensor& x, const ConvParams& p, Tensor& dw,
                            Tensor* dbias) {
  num_threads();
  if (dy.dtype() == DType::F64) return backward_filter<double>(dy, x, p, dw, dbias);
  backward_filter<float>(dy, x, p, dw, dbias);
}

}  // namespace covidrate::cpu
