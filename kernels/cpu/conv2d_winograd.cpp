// Winograd F(2x2, 3x3): each 2x2 block ("tile") of output is computed from the
// 4x4 input patch under it with 16 multiplications per input channel instead of
// 36, after both the patch and the filter are mapped into a 4x4 "Winograd
// domain":
//   U = G g G^T        (filter g, 3x3 -> 4x4; once per call)
//   V = B^T d B        (input patch d, 4x4 -> 4x4)
//   M[e] = sum_ci U[e][co][ci] * V[e][ci][tile]    for each of the 16 positions e:
//          16 gemms [Cout x Cin] * [Cin x tiles]
//   y = A^T M A        (4x4 -> the 2x2 output tile)
// with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5;
// .5 -.5 .5; 0 0 1], A^T = [1 1 1 0; 0 1 -1 -1]. The gemms do 2.25x fewer
// flops than im2col's; the transforms are only adds and halvings, so float
// results keep to the direct sum within the 1e-4 of tests/test_conv.cpp even
// over 512 input channels.
//
// The backward data pass is the same computation on the transposed, rotated
// filters; dilated layers run it on a dilation-strided grid of tiles.
// Work is cut into bands of tile rows of one image, each thread transforming
// and multiplying its own bands in its own scratch (the same scheme as
// conv2d.cpp's forward).
#include "kernels/cpu/conv2d_winograd.h"

#include <algorithm>

#include "kernels/cpu/conv2d_gemm.h"
#include "kernels/cpu/threads.h"

namespace covidrate::cpu {

namespace {

constexpr int kPositions = 16;  // a 4x4 Winograd-domain tile
// Tiles per band: enough columns for the 16 gemms to run well, few enough for
// V and M of a band to stay near the core's cache.
constexpr int64_t kBandTiles = 256;
// Upper bound of the V and M scratch of all threads together.
constexpr size_t kScratchBytes = size_t{64} << 20;
// U, V and M hold 16 matrices, one per position e, and each transform touches
// all 16 at once. Matrix sizes are often multiples of 4 KB, which would put
// those 16 addresses in the same L1 set and evict each other (measured: 2.5x
// slower transforms); a skew of 16 elements between consecutive matrices
// spreads them over different sets.
constexpr int64_t kSkew = 16;
int64_t position_stride(int64_t matrix_size) { return matrix_size + kSkew; }

// How the output is cut into tiles. With dilation d, a tile is the 2x2 outputs
// (oh, ow), (oh, ow+d), (oh+d, ow), (oh+d, ow+d), reading the 4x4 inputs spaced
// d apart under them: the same F(2x2, 3x3) on a d-strided grid. Tile row r
// starts at output row origin(r); the d tile rows of a group interleave to cover
// 2d output rows (the same for columns).
struct Tiling {
  int64_t cin, h, w, cout, ho, wo, pad, dil;
  int64_t tile_rows = 0, tile_cols = 0;

  Tiling(int64_t cin_, int64_t h_, int64_t w_, int64_t cout_, int64_t ho_, int64_t wo_,
         int64_t pad_, int64_t dil_)
      : cin(cin_), h(h_), w(w_), cout(cout_), ho(ho_), wo(wo_), pad(pad_), dil(dil_),
        tile_rows((ho_ + 2 * dil_ - 1) / (2 * dil_) * dil_),
        tile_cols((wo_ + 2 * dil_ - 1) / (2 * dil_) * dil_) {}

  int64_t origin(int64_t r) const { return r / dil * 2 * dil + r % dil; }
  // Padded input row of transform_inputs, output row of transform_outputs.
  int64_t in_width() const { return 2 * tile_cols + 2 * dil; }
  int64_t out_width() const { return 2 * tile_cols; }
};

// u[e][co][ci] = (G g G^T)[e] of the filter g = w[co][ci], w being [cout, cin, 3, 3].
// For the backward data pass, `transposed` reads the filters of the transposed
// convolution instead: g = w[ci][co] rotated by 180 degrees, w being [cin, cout, 3, 3].
template <class T>
void transform_filters(const T* w, int64_t cout, int64_t cin, bool transposed, T* u) {
  const int64_t filters = cout * cin;
  const int64_t step = position_stride(filters);
  parallel_for(filters, 256, [&](int64_t begin, int64_t end) {
    for (int64_t f = begin; f < end; ++f) {
      T g[9];
      if (transposed) {
        const T* src = w + (f % cin * cout + f / cin) * 9;
        for (int k = 0; k < 9; ++k) g[k] = src[8 - k];
      } else {
        std::copy_n(w + f * 9, 9, g);
      }
      T gg[4][3];  // G g
      for (int j = 0; j < 3; ++j) {
        gg[0][j] = g[j];
        gg[1][j] = T(0.5) * (g[j] + g[3 + j] + g[6 + j]);
        gg[2][j] = T(0.5) * (g[j] - g[3 + j] + g[6 + j]);
        gg[3][j] = g[6 + j];
      }
      for (int i = 0; i < 4; ++i) {  // (G g) G^T
        u[(i * 4 + 0) * step + f] = gg[i][0];
        u[(i * 4 + 1) * step + f] = T(0.5) * (gg[i][0] + gg[i][1] + gg[i][2]);
        u[(i * 4 + 2) * step + f] = T(0.5) * (gg[i][0] - gg[i][1] + gg[i][2]);
        u[(i * 4 + 3) * step + f] = gg[i][2];
      }
    }
  });
}

// v[e][ci - c0][t] = (B^T d B)[e] for the 4x4 input patch d of channel ci in
// [c0, c1) under each tile t of tile rows [r0, r1) of one image x (zero outside
// the image). The four input
// rows under a tile row are first copied, zero-padded, into `rows`
// (4 x in_width() values), so the transform itself needs no bounds checks.
template <class T>
void transform_inputs(const Tiling& g, const T* x, int64_t c0, int64_t c1, int64_t r0, int64_t r1,
                      T* rows, T* v) {
  const int64_t tiles = (r1 - r0) * g.tile_cols;
  const int64_t width = g.in_width(), dil = g.dil;
  const int64_t step = position_stride((c1 - c0) * tiles);
  // Input columns [0, w) land at [pad, pad + w) of a padded row, clipped to its width.
  const int64_t copy = std::clamp<int64_t>(width - g.pad, 0, g.w);
  for (int64_t ci = c0; ci < c1; ++ci) {
    const T* plane = x + ci * g.h * g.w;
    for (int64_t r = r0; r < r1; ++r) {
      for (int i = 0; i < 4; ++i) {
        T* dst = rows + i * width;
        const int64_t ih = g.origin(r) - g.pad + i * dil;
        std::fill_n(dst, width, T(0));
        if (ih >= 0 && ih < g.h) std::copy_n(plane + ih * g.w, copy, dst + g.pad);
      }
      T* out = v + (ci - c0) * tiles + (r - r0) * g.tile_cols;
      for (int64_t tc = 0; tc < g.tile_cols; ++tc) {
        const T* patch = rows + g.origin(tc);  // padded column of input column origin - pad
        T d[4][4];
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j) d[i][j] = patch[i * width + j * dil];
        T bd[4][4];  // B^T d
        for (int j = 0; j < 4; ++j) {
          bd[0][j] = d[0][j] - d[2][j];
          bd[1][j] = d[1][j] + d[2][j];
          bd[2][j] = d[2][j] - d[1][j];
          bd[3][j] = d[1][j] - d[3][j];
        }
        for (int i = 0; i < 4; ++i) {  // (B^T d) B
          out[(i * 4 + 0) * step + tc] = bd[i][0] - bd[i][2];
          out[(i * 4 + 1) * step + tc] = bd[i][1] + bd[i][2];
          out[(i * 4 + 2) * step + tc] = bd[i][2] - bd[i][1];
          out[(i * 4 + 3) * step + tc] = bd[i][1] - bd[i][3];
        }
      }
    }
  }
}

// y = (A^T m A) + bias, or y += A^T m A when accumulating, for every tile of
// tile rows [r0, r1) of one image, m[e][co][t]. Each tile row goes through
// `rows` (2 x out_width() values), so an output whose size is not a multiple of
// the tiling keeps only what fits.
template <class T> void transform_outputs(const Tiling& g, const T* m, const T* bias, int64_t r0,
                                          int64_t r1, T* rows, T* y, bool accumulate) {
  const int64_t tiles = (r1 - r0) * g.tile_cols;
  const int64_t width = g.out_width();
  const int64_t step = position_stride(g.cout * tiles);
  for (int64_t co = 0; co < g.cout; ++co) {
    T* plane = y + co * g.ho * g.wo;
    const T b = bias ? bias[co] : T(0);
    for (int64_t r = r0; r < r1; ++r) {
      const T* in = m + co * tiles + (r - r0) * g.tile_cols;
      for (int64_t tc = 0; tc < g.tile_cols; ++tc) {
        T am[2][4];  // A^T m
        for (int j = 0; j < 4; ++j) {
          am[0][j] = in[j * step + tc] + in[(4 + j) * step + tc] + in[(8 + j) * step + tc];
          am[1][j] = in[(4 + j) * step + tc] - in[(8 + j) * step + tc] - in[(12 + j) * step + tc];
        }
        T* out = rows + g.origin(tc);
        for (int i = 0; i < 2; ++i) {
          out[i * width] = am[i][0] + am[i][1] + am[i][2] + b;
          out[i * width + g.dil] = am[i][1] - am[i][2] - am[i][3] + b;
        }
      }
      for (int i = 0; i < 2 && g.origin(r) + i * g.dil < g.ho; ++i) {
        T* dst = plane + (g.origin(r) + i * g.dil) * g.wo;
        if (accumulate) {
          for (int64_t q = 0; q < g.wo; ++q) dst[q] += rows[i * width + q];
        } else {
          std::copy_n(rows + i * width, g.wo, dst);
        }
      }
    }
  }
}

// The 3x3 stride-1 convolution of `batch` images x [cin, h, w] into y [cout, ho, wo]
// (see transform_filters for w and `transposed`).
template <class T> void convolve(const Tiling& g, int64_t batch, const T* xs, const T* w,
                                 bool transposed, const T* bs, T* ys, bool accumulate) {
  const int threads = num_threads();
  // Tile rows per band: about kBandTiles tiles, every thread busy, scratch bounded.
  const auto row_bytes = static_cast<size_t>(kPositions * (g.cin + g.cout) * g.tile_cols) * sizeof(T);
  const int64_t rows = std::clamp<int64_t>(
      std::min({(kBandTiles + g.tile_cols - 1) / g.tile_cols,
                (batch * g.tile_rows + threads - 1) / threads,
                static_cast<int64_t>(kScratchBytes / (row_bytes * threads))}),
      1, g.tile_rows);
  const int64_t bands = (g.tile_rows + rows - 1) / rows;
  const int64_t chunks = chunk_count(batch * bands, 1);
  const int64_t filters = g.cout * g.cin;
  const int64_t band_tiles = rows * g.tile_cols;
  const auto v_size = static_cast<size_t>(kPositions * position_stride(g.cin * band_tiles));
  const auto m_size = static_cast<size_t>(kPositions * position_stride(g.cout * band_tiles));
  const auto rows_size = static_cast<size_t>(4 * g.in_width());
  const size_t chunk_size = v_size + m_size + rows_size;
  // One buffer: the transformed filters, then each chunk's V, M and padded rows.
  const auto u_size = static_cast<size_t>(kPositions * position_stride(filters));
  T* u = scratch_buffer<T>(u_size + chunk_size * static_cast<size_t>(chunks));
  transform_filters(w, g.cout, g.cin, transposed, u);

  parallel_chunks(batch * bands, chunks, [&](int64_t chunk, int64_t begin, int64_t end) {
    T* v = u + u_size + chunk_size * static_cast<size_t>(chunk);
    T* m = v + v_size;
    T* row_buffer = m + m_size;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / bands, r0 = item % bands * rows, r1 = std::min(g.tile_rows, r0 + rows);
      const int64_t tiles = (r1 - r0) * g.tile_cols;
      transform_inputs(g, xs + b * g.cin * g.h * g.w, 0, g.cin, r0, r1, row_buffer, v);
      for (int e = 0; e < kPositions; ++e) {
        gemm(false, false, g.cout, tiles, g.cin, T(1), u + e * position_stride(filters), g.cin,
             v + e * position_stride(g.cin * tiles), tiles, T(0),
             m + e * position_stride(g.cout * tiles), tiles);
      }
      transform_outputs(g, m, bs, r0, r1, row_buffer, ys + b * g.cout * g.ho * g.wo, accumulate);
    }
  });
}

// dm[e][co][t] = (A dy A^T)[e] for the 2x2 output gradient under each tile t
// of tile rows [r0, r1) of one image (zero beyond the output): the adjoint of
// transform_outputs. Rows of dy go through `rows` (2 x out_width() values).
template <class T> void transform_gradients(const Tiling& g, const T* dy, int64_t r0, int64_t r1,
                                            T* rows, T* dm) {
  const int64_t tiles = (r1 - r0) * g.tile_cols;
  const int64_t width = g.out_width(), dil = g.dil;
  const int64_t step = position_stride(g.cout * tiles);
  for (int64_t co = 0; co < g.cout; ++co) {
    const T* plane = dy + co * g.ho * g.wo;
    for (int64_t r = r0; r < r1; ++r) {
      for (int i = 0; i < 2; ++i) {
        T* dst = rows + i * width;
        const int64_t oh = g.origin(r) + i * dil;
        std::fill_n(dst, width, T(0));
        if (oh < g.ho) std::copy_n(plane + oh * g.wo, g.wo, dst);
      }
      T* out = dm + co * tiles + (r - r0) * g.tile_cols;
      for (int64_t tc = 0; tc < g.tile_cols; ++tc) {
        const T* q = rows + g.origin(tc);
        const T d[2][2] = {{q[0], q[dil]}, {q[width], q[width + dil]}};
        T ad[4][2];  // A d, A = (A^T)^T = [1 0; 1 1; 1 -1; 0 -1]
        for (int j = 0; j < 2; ++j) {
          ad[0][j] = d[0][j];
          ad[1][j] = d[0][j] + d[1][j];
          ad[2][j] = d[0][j] - d[1][j];
          ad[3][j] = -d[1][j];
        }
        for (int i = 0; i < 4; ++i) {  // (A d) A^T
          out[(i * 4 + 0) * step + tc] = ad[i][0];
          out[(i * 4 + 1) * step + tc] = ad[i][0] + ad[i][1];
          out[(i * 4 + 2) * step + tc] = ad[i][0] - ad[i][1];
          out[(i * 4 + 3) * step + tc] = -ad[i][1];
        }
      }
    }
  }
}

// dw[co][ci] += G^T du[co][ci] G, the adjoint of transform_filters.
template <class T> void untransform_filter_gradients(const T* du, int64_t filters, T* dw) {
  const int64_t step = position_stride(filters);
  parallel_for(filters, 256, [&](int64_t begin, int64_t end) {
    for (int64_t f = begin; f < end; ++f) {
      T gu[3][4];  // G^T du
      for (int j = 0; j < 4; ++j) {
        const T u0 = du[j * step + f], u1 = du[(4 + j) * step + f];
        const T u2 = du[(8 + j) * step + f], u3 = du[(12 + j) * step + f];
        gu[0][j] = u0 + T(0.5) * (u1 + u2);
        gu[1][j] = T(0.5) * (u1 - u2);
        gu[2][j] = T(0.5) * (u1 + u2) + u3;
      }
      T* out = dw + f * 9;
      for (int a = 0; a < 3; ++a) {  // (G^T du) G
        out[a * 3 + 0] += gu[a][0] + T(0.5) * (gu[a][1] + gu[a][2]);
        out[a * 3 + 1] += T(0.5) * (gu[a][1] - gu[a][2]);
        out[a * 3 + 2] += T(0.5) * (gu[a][1] + gu[a][2]) + gu[a][3];
      }
    }
  });
}

// dw += the filter gradient, summed in the Winograd domain:
//   dU[e][co][ci] = sum_t dM[e][co][t] * V[e][ci][t],  then dw += G^T dU G.
// Threads split the 16 positions e: each owns dU[e] of its positions, and
// transforms input and gradient itself (the transforms cost a few percent of
// the gemms, cheaper than sharing them through a barrier per band).
template <class T> void filter_gradient(const Tiling& g, int64_t batch, const T* dys, const T* xs,
                                        T* dw) {
  const int64_t chunks = chunk_count(kPositions, 1);
  const auto row_bytes =
      static_cast<size_t>(kPositions * (g.cin + g.cout) * g.tile_cols * chunks) * sizeof(T);
  const int64_t rows = std::clamp<int64_t>(
      std::min((kBandTiles + g.tile_cols - 1) / g.tile_cols,
               static_cast<int64_t>(kScratchBytes / row_bytes)),
      1, g.tile_rows);
  const int64_t filters = g.cout * g.cin;
  const int64_t band_tiles = rows * g.tile_cols;
  const auto v_size = static_cast<size_t>(kPositions * position_stride(g.cin * band_tiles));
  const auto m_size = static_cast<size_t>(kPositions * position_stride(g.cout * band_tiles));
  const auto rows_size = static_cast<size_t>(4 * g.in_width());
  const size_t chunk_size = v_size + m_size + rows_size;
  // One buffer: dU, then each chunk's V, dM and padded rows.
  const auto u_size = static_cast<size_t>(kPositions * position_stride(filters));
  T* du = scratch_buffer<T>(u_size + chunk_size * static_cast<size_t>(chunks));

  parallel_chunks(kPositions, chunks, [&](int64_t chunk, int64_t e0, int64_t e1) {
    T* v = du + u_size + chunk_size * static_cast<size_t>(chunk);
    T* dm = v + v_size;
    T* row_buffer = dm + m_size;
    bool first = true;  // the first product of each dU[e] overwrites it
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t r0 = 0; r0 < g.tile_rows; r0 += rows, first = false) {
        const int64_t r1 = std::min(g.tile_rows, r0 + rows);
        const int64_t tiles = (r1 - r0) * g.tile_cols;
        transform_inputs(g, xs + b * g.cin * g.h * g.w, 0, g.cin, r0, r1, row_buffer, v);
        transform_gradients(g, dys + b * g.cout * g.ho * g.wo, r0, r1, row_buffer, dm);
        for (int64_t e = e0; e < e1; ++e) {
          gemm(false, true, g.cout, g.cin, tiles, T(1), dm + e * position_stride(g.cout * tiles),
               tiles, v + e * position_stride(g.cin * tiles), tiles, first ? T(0) : T(1),
               du + e * position_stride(filters), g.cin);
        }
      }
    }
  });
  untransform_filter_gradients(du, filters, dw);
}

}  // namespace

bool winograd_applies(const Tensor& w, const ConvParams& p) {
  return w.h() == 3 && w.w() == 3 && p.stride == 1 && p.pad <= 2 * p.dilation;
}

void winograd_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const ConvParams& p,
                      Tensor& y) {
  const Tiling g(x.c(), x.h(), x.w(), w.n(), y.h(), y.w(), p.pad, p.dilation);
  if (x.dtype() == DType::F64) {
    return convolve<double>(g, x.n(), x.data<double>(), w.data<double>(), false,
                            bias ? bias->data<double>() : nullptr, y.data<double>(), false);
  }
  convolve<float>(g, x.n(), x.data<float>(), w.data<float>(), false,
                  bias ? bias->data<float>() : nullptr, y.data<float>(), false);
}

// dx is dy convolved with the transposed, 180-degree-rotated filters, same
// dilation, padding 2*dilation - pad: every output pixel that read x[ih, iw]
// through tap (i, j) sends its gradient back through the mirrored tap.
void winograd_backward_data(const Tensor& dy, const Tensor& w, const ConvParams& p, Tensor& dx,
                            bool accumulate) {
  const Tiling g(dy.c(), dy.h(), dy.w(), dx.c(), dx.h(), dx.w(), 2 * p.dilation - p.pad, p.dilation);
  if (dy.dtype() == DType::F64) {
    return convolve<double>(g, dy.n(), dy.data<double>(), w.data<double>(), true, nullptr,
                            dx.data<double>(), accumulate);
  }
  convolve<float>(g, dy.n(), dy.data<float>(), w.data<float>(), true, nullptr, dx.data<float>(),
                  accumulate);
}

void winograd_backward_filter(const Tensor& dy, const Tensor& x, const ConvParams& p, Tensor& dw) {
  const Tiling g(x.c(), x.h(), x.w(), dy.c(), dy.h(), dy.w(), p.pad, p.dilation);
  if (x.dtype() == DType::F64) {
    return filter_gradient<double>(g, x.n(), dy.data<double>(), x.data<double>(), dw.data<double>());
  }
  filter_gradient<float>(g, x.n(), dy.data<float>(), x.data<float>(), dw.data<float>());
}

}  // namespace covidrate::cpu
