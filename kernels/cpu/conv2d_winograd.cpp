// Winograd's minimal filtering F(m x m, 3x3), m = 2 or 4 (Lavin & Gray, "Fast
// Algorithms for Convolutional Neural Networks", 2016), and F(4x4, 2x2) for the
// 2x2 kernels of the decoders' four-phase up-convolutions (model/inference_form.h):
// each m x m block ("tile") of output of an r x r kernel is computed from the
// (m+r-1) x (m+r-1) input patch under it, after both the patch and the filter
// are mapped into the (m+r-1) x (m+r-1) "Winograd domain" (written below for
// r = 3: patches of (m+2) x (m+2)):
//   U = G g G^T        (filter g, 3x3 -> (m+2)^2; once per call)
//   V = B^T d B        (input patch d)
//   M[e] = sum_ci U[e][co][ci] * V[e][ci][tile]    for each of the (m+2)^2 positions e:
//          (m+2)^2 gemms [Cout x Cin] * [Cin x tiles]
//   y = A^T M A        (the m x m output tile)
// Per output pixel and channel pair the gemms multiply 16 / 4 = 4 times with
// m = 2 and 36 / 16 = 2.25 times with m = 4, against 9 for im2col.
//   F(2x2, 3x3): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
//                G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1], A^T = [1 1 1 0; 0 1 -1 -1].
//   F(4x4, 3x3), interpolation points 0, 1, -1, 2, -2 and infinity:
//                B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
//                       0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1],
//                G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6;
//                     1/24 -1/12 1/6; 0 0 1],
//                A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].
// F(2x2)'s transforms only add and halve. F(4x4)'s coefficients (up to 8 in A,
// 5 in B) cost float bits: tests/test_conv.cpp holds both to the direct sum
// within 1e-4 of the output's scale over 512 input channels.
//   F(4x4, 2x2), points 0, 1, -1, 2 and infinity (Toom-Cook: row k of B^T holds
//   the coefficients of prod_{l != k} (x - p_l), the last row those of
//   prod_l (x - p_l); row k of G is (1, p_k) / prod_{l != k} (p_k - p_l)):
//                B^T = [2 -1 -2 1 0; 0 -2 -1 1 0; 0 2 -3 1 0; 0 -1 0 1 0; 0 2 -1 -2 1],
//                G = [1/2 0; -1/2 -1/2; -1/6 1/6; 1/6 1/3; 0 1],
//                A^T = [1 1 1 1 0; 0 1 -1 2 0; 0 1 1 4 0; 0 1 -1 8 1].
//   25 products per 16 outputs against 4 per output for im2col. Only inference
//   forwards run it (no backward is written for it): the phase convolutions of
//   the inference form, 2x2, stride 1, no dilation.
//
// Inference forwards (ConvParams::inference: no gradient will be taken) run
// F(4x4) on maps large enough for it to pay (winograd_tile), 1.2-1.45x faster
// per layer there. Training keeps F(2x2) in all three passes: F(4x4) in the
// forward alone made the width-0.25 network's weight gradients up to 6x
// farther from float64's (relative L2 error up to 3e-3 instead of 5e-4).
// set_winograd_tile forces either tile in the forward and backward data
// passes, for tests and benchmarks; the filter gradient runs F(2x2) only (its
// adjoint transforms are written for m = 2).
// The backward data pass is the same computation on the transposed, rotated
// filters; dilated layers run it on a dilation-strided grid of tiles.
// Work is cut into bands of tile rows of one image, each thread transforming
// and multiplying its own bands in its own scratch (the same scheme as
// conv2d.cpp's forward).
#include "kernels/cpu/conv2d_winograd.h"

#include <algorithm>
#include <atomic>
#include <string>
#include <type_traits>

#include "kernels/cpu/conv2d_gemm.h"
#include "kernels/cpu/threads.h"

namespace covidrate::cpu {

namespace {

// Output tile side m and kernel side r (3 unless named: the 3x3 kernels) ->
// input patch side and number of Winograd-domain positions.
constexpr int patch_side(int m, int r = 3) { return m + r - 1; }
constexpr int positions(int m, int r = 3) { return patch_side(m, r) * patch_side(m, r); }
// Tiles per band: enough columns for the gemms to run well, few enough for
// V and M of a band to stay near the core's cache. A tile of F(4x4) holds 36
// values to F(2x2)'s 16, so its bands have half the tiles (measured on the
// 512x512 decoder layers, 128 tiles against 256: 1.15-1.25x faster).
constexpr int64_t band_tiles(int m) { return m == 2 ? 256 : 128; }
// Upper bound of the V and M scratch of all threads together.
constexpr size_t kScratchBytes = size_t{64} << 20;
// U, V and M hold one matrix per position e, and each transform touches all
// of them at once. Matrix sizes are often multiples of 4 KB, which would put
// those addresses in the same L1 set and evict each other (measured with m = 2:
// 2.5x slower transforms); a skew of 16 elements between consecutive matrices
// spreads them over different sets.
constexpr int64_t kSkew = 16;
int64_t position_stride(int64_t matrix_size) { return matrix_size + kSkew; }

// 0: the forward follows ConvParams::inference (choose_tile), backward data
// takes 2; 2 or 4: set_winograd_tile forced it for both.
std::atomic<int> forced_tile{0};

// How the output is cut into tiles of m x m. With dilation d, a tile is the
// outputs (oh + i d, ow + j d), i, j < m, reading the (m+2) x (m+2) inputs
// spaced d apart under them: the same F(m x m, 3x3) on a d-strided grid. Tile
// row r starts at output row origin(r); the d tile rows of a group interleave
// to cover m d output rows.
// Within a tile row, tiles are numbered phase-major: tile c = s K + k
// (K = phase_tiles(), phase s < d) starts at column m d k + s. The transforms
// keep their rows of inputs and outputs phase-major too (column x of a row of
// n values at (x % d) (n / d) + x / d), so that tile c reads or writes
// columns m k, m k + 1, ... of its phase's sub-row, adjacent tiles adjacent
// values: loops over tiles then vectorize for any dilation (with d = 1 all of
// this is the natural order).
// kernel: the kernel's side (3, or 2 for F(4x4, 2x2)).
struct Tiling {
  int64_t m, cin, h, w, cout, ho, wo, pad, dil, kernel;
  int64_t tile_rows = 0, tile_cols = 0;

  Tiling(int64_t m_, int64_t cin_, int64_t h_, int64_t w_, int64_t cout_, int64_t ho_, int64_t wo_,
         int64_t pad_, int64_t dil_, int64_t kernel_ = 3)
      : m(m_), cin(cin_), h(h_), w(w_), cout(cout_), ho(ho_), wo(wo_), pad(pad_), dil(dil_), kernel(kernel_),
        tile_rows((ho_ + m_ * dil_ - 1) / (m_ * dil_) * dil_),
        tile_cols((wo_ + m_ * dil_ - 1) / (m_ * dil_) * dil_) {}

  int64_t origin(int64_t r) const { return r / dil * m * dil + r % dil; }
  int64_t phase_tiles() const { return tile_cols / dil; }
  // Padded input row of transform_inputs, output row of transform_outputs and
  // transform_gradients; both multiples of d.
  int64_t in_width() const { return m * tile_cols + (kernel - 1) * dil; }
  int64_t out_width() const { return m * tile_cols; }
  // Products the gemms compute per input/output channel pair.
  int64_t products() const {
    return tile_rows * tile_cols * positions(static_cast<int>(m), static_cast<int>(kernel));
  }
};

// The first `count` columns of the natural row `src` into the phase-major row
// `dst` of n values (n / dil per phase), and back (phase_to_natural, adding
// when accumulating). kDil: the dilation if known at compile time, else 0.
// The loops run over natural columns, d at a time, so that a compile-time d
// vectorizes into contiguous loads and stores interleaved by shuffles; the
// columns of a last, incomplete group of d follow one by one.
template <int kDil, class T>
void natural_to_phase(const T* __restrict src, int64_t count, int64_t n, int64_t dil,
                      T* __restrict dst) {
  if (kDil) dil = kDil;
  const int64_t len = n / dil, groups = count / dil;
  for (int64_t m = 0; m < groups; ++m)
    for (int64_t s = 0; s < dil; ++s) dst[s * len + m] = src[m * dil + s];
  for (int64_t x = groups * dil; x < count; ++x) dst[x % dil * len + x / dil] = src[x];
}
template <int kDil, class T>
void phase_to_natural(const T* __restrict src, int64_t count, int64_t n, int64_t dil,
                      bool accumulate, T* __restrict dst) {
  if (kDil) dil = kDil;
  const int64_t len = n / dil, groups = count / dil;
  if (accumulate) {
    for (int64_t m = 0; m < groups; ++m)
      for (int64_t s = 0; s < dil; ++s) dst[m * dil + s] += src[s * len + m];
    for (int64_t x = groups * dil; x < count; ++x) dst[x] += src[x % dil * len + x / dil];
  } else {
    for (int64_t m = 0; m < groups; ++m)
      for (int64_t s = 0; s < dil; ++s) dst[m * dil + s] = src[s * len + m];
    for (int64_t x = groups * dil; x < count; ++x) dst[x] = src[x % dil * len + x / dil];
  }
}

// G of F(2x2, 3x3) and F(4x4, 3x3) (see the top of the file).
constexpr double kG2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
constexpr double kG4[6][3] = {{1.0 / 4, 0, 0},
                              {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                              {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                              {1.0 / 24, 1.0 / 12, 1.0 / 6},
                              {1.0 / 24, -1.0 / 12, 1.0 / 6},
                              {0, 0, 1}};
// G of F(4x4, 2x2).
constexpr double kG42[5][2] = {{0.5, 0}, {-0.5, -0.5}, {-1.0 / 6, 1.0 / 6}, {1.0 / 6, 1.0 / 3}, {0, 1}};

// u[e][co][ci] = (G g G^T)[e] of the filter g = w[co][ci], w being [cout, cin, R, R],
// computed in double and rounded once. For the backward data pass, `transposed`
// reads the filters of the transposed convolution instead: g = w[ci][co]
// rotated by 180 degrees, w being [cin, cout, R, R].
template <int M, int R, class T>
void transform_filters(const T* w, int64_t cout, int64_t cin, bool transposed, T* u) {
  constexpr int n = patch_side(M, R), taps = R * R;
  const double(*G)[R] = nullptr;
  if constexpr (R == 2) {
    G = kG42;
  } else {
    G = M == 2 ? kG2 : kG4;
  }
  const int64_t filters = cout * cin;
  const int64_t step = position_stride(filters);
  parallel_for(filters, 256, [&](int64_t begin, int64_t end) {
    for (int64_t f = begin; f < end; ++f) {
      double g[taps];
      if (transposed) {
        const T* src = w + (f % cin * cout + f / cin) * taps;
        for (int k = 0; k < taps; ++k) g[k] = src[taps - 1 - k];
      } else {
        for (int k = 0; k < taps; ++k) g[k] = w[f * taps + k];
      }
      double gg[n][R] = {};  // G g
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < R; ++j)
          for (int a = 0; a < R; ++a) gg[i][j] += G[i][a] * g[a * R + j];
      for (int i = 0; i < n; ++i)  // (G g) G^T
        for (int j = 0; j < n; ++j) {
          double sum = 0;
          for (int b = 0; b < R; ++b) sum += gg[i][b] * G[j][b];
          u[(i * n + j) * step + f] = static_cast<T>(sum);
        }
    }
  });
}

// The two passes of transform_inputs as functions of their own: GCC trusts
// __restrict on parameters (not on locals), and vectorizes these loops only
// when it knows that the rows do not overlap.
// Pass 1, n columns: b_i = (B^T d)[i] for the input rows d0, d1, ..., whose
// columns are `stride` apart.
template <int kStride, class T>
void b_columns_2(const T* __restrict d0, const T* __restrict d1, const T* __restrict d2,
                 const T* __restrict d3, int64_t stride, int64_t n, T* __restrict b0,
                 T* __restrict b1, T* __restrict b2, T* __restrict b3) {
  if (kStride) stride = kStride;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t q = k * stride;
    b0[k] = d0[q] - d2[q];
    b1[k] = d1[q] + d2[q];
    b2[k] = d2[q] - d1[q];
    b3[k] = d1[q] - d3[q];
  }
}
template <int kStride, class T>
void b_columns_4(const T* __restrict d0, const T* __restrict d1, const T* __restrict d2,
                 const T* __restrict d3, const T* __restrict d4, const T* __restrict d5,
                 int64_t stride, int64_t n, T* __restrict b0, T* __restrict b1, T* __restrict b2,
                 T* __restrict b3, T* __restrict b4, T* __restrict b5) {
  if (kStride) stride = kStride;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t q = k * stride;
    b0[k] = T(4) * d0[q] - T(5) * d2[q] + d4[q];
    b1[k] = d3[q] + d4[q] - T(4) * (d1[q] + d2[q]);
    b2[k] = d4[q] - d3[q] + T(4) * (d1[q] - d2[q]);
    b3[k] = d4[q] - d2[q] + T(2) * (d3[q] - d1[q]);
    b4[k] = d4[q] - d2[q] - T(2) * (d3[q] - d1[q]);
    b5[k] = T(4) * d1[q] - T(5) * d3[q] + d5[q];
  }
}
// F(4x4, 2x2): five input rows, five rows of B^T d.
template <int kStride, class T>
void b_columns_42(const T* __restrict d0, const T* __restrict d1, const T* __restrict d2,
                  const T* __restrict d3, const T* __restrict d4, int64_t stride, int64_t n,
                  T* __restrict b0, T* __restrict b1, T* __restrict b2, T* __restrict b3,
                  T* __restrict b4) {
  if (kStride) stride = kStride;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t q = k * stride;
    const T rise = d3[q] - d2[q];  // shared by four of the five rows
    b0[k] = rise + T(2) * d0[q] - d1[q] - d2[q];
    b1[k] = rise - T(2) * d1[q];
    b2[k] = rise + T(2) * (d1[q] - d2[q]);
    b3[k] = d3[q] - d1[q];
    b4[k] = d4[q] - d2[q] + T(2) * (d1[q] - d3[q]);
  }
}
// Pass 2, n tiles: o_j[k] = (p B)[j] for the m + r - 1 values p[m k ...] of tile k,
// o_j at o + j step.
template <class T>
void b_rows_2(const T* __restrict p, int64_t n, T* __restrict o0, T* __restrict o1,
              T* __restrict o2, T* __restrict o3) {
  for (int64_t k = 0; k < n; ++k) {
    const T* c = p + 2 * k;
    o0[k] = c[0] - c[2];
    o1[k] = c[1] + c[2];
    o2[k] = c[2] - c[1];
    o3[k] = c[1] - c[3];
  }
}
template <class T>
void b_rows_4(const T* __restrict p, int64_t n, T* __restrict o0, T* __restrict o1,
              T* __restrict o2, T* __restrict o3, T* __restrict o4, T* __restrict o5) {
  for (int64_t k = 0; k < n; ++k) {
    const T* c = p + 4 * k;
    o0[k] = T(4) * c[0] - T(5) * c[2] + c[4];
    o1[k] = c[3] + c[4] - T(4) * (c[1] + c[2]);
    o2[k] = c[4] - c[3] + T(4) * (c[1] - c[2]);
    o3[k] = c[4] - c[2] + T(2) * (c[3] - c[1]);
    o4[k] = c[4] - c[2] - T(2) * (c[3] - c[1]);
    o5[k] = T(4) * c[1] - T(5) * c[3] + c[5];
  }
}

template <class T>
void b_rows_42(const T* __restrict p, int64_t n, T* __restrict o0, T* __restrict o1,
               T* __restrict o2, T* __restrict o3, T* __restrict o4) {
  for (int64_t k = 0; k < n; ++k) {
    const T* c = p + 4 * k;
    const T rise = c[3] - c[2];
    o0[k] = rise + T(2) * c[0] - c[1] - c[2];
    o1[k] = rise - T(2) * c[1];
    o2[k] = rise + T(2) * (c[1] - c[2]);
    o3[k] = c[3] - c[1];
    o4[k] = c[4] - c[2] + T(2) * (c[1] - c[3]);
  }
}

// v[e][ci][t] = (B^T d B)[e] for the (m+2) x (m+2) input patch d of channel ci
// under each tile t of tile rows [r0, r1) of one image x (zero outside the
// image), for the positions e in [e0, e1) (the filter gradient's threads each
// need only their own). B^T d B is computed in two passes, each a loop over
// contiguous values that the compiler vectorizes, rather than tile by tile
// (whose scalar stores per tile made this the costliest part of a narrow
// network's training step):
//   1. B^T down the columns: the m + 2 input rows under a tile row, read in
//      place (rows outside the image read `zeros`), combine into m + 2
//      phase-major padded rows bt[i] of in_width() values, zero where the
//      padding is;
//   2. B along the rows: the m + 2 columns of bt[i] under each tile give the
//      positions (m+2) i + j, written as contiguous runs of tiles.
// `rows` holds (m + 2) in_width() + w values.
template <int M, int kDil, int R = 3, class T>
void transform_inputs(const Tiling& g, const T* x, int64_t r0, int64_t r1, int e0, int e1, T* rows,
                      T* v) {
  constexpr int n = patch_side(M, R);
  const int64_t tiles = (r1 - r0) * g.tile_cols, phase_tiles = g.phase_tiles();
  const int64_t width = g.in_width(), dil = kDil ? kDil : g.dil, phase_len = width / dil;
  const int64_t step = position_stride(g.cin * tiles);
  // Input columns [0, w) land at [pad, pad + w) of a padded row, clipped to its width.
  const int64_t copy = std::clamp<int64_t>(width - g.pad, 0, g.w);
  T* bt[n];
  for (int i = 0; i < n; ++i) bt[i] = rows + i * width;
  T* const zeros = rows + n * width;
  std::fill_n(rows, n * width + g.w, T(0));  // pass 1 writes only inside the image
  const int i0 = e0 / n, i1 = (e1 + n - 1) / n;  // the rows bt[i] that positions [e0, e1) need
  for (int64_t ci = 0; ci < g.cin; ++ci) {
    const T* plane = x + ci * g.h * g.w;
    for (int64_t r = r0; r < r1; ++r) {
      const T* d[n];
      for (int i = 0; i < n; ++i) {
        const int64_t ih = g.origin(r) - g.pad + i * dil;
        d[i] = ih >= 0 && ih < g.h ? plane + ih * g.w : zeros;
      }
      for (int64_t s = 0; s < dil; ++s) {
        // Padded column dil m + s of this phase is input column dil m + s - pad.
        const int64_t m0 = (std::max<int64_t>(g.pad - s, 0) + dil - 1) / dil;
        const int64_t m1 = (std::max<int64_t>(g.pad + copy - s, 0) + dil - 1) / dil;
        const int64_t q0 = m0 * dil + s - g.pad;
        const int64_t at = s * phase_len + m0;
        if constexpr (R == 2) {
          b_columns_42<kDil>(d[0] + q0, d[1] + q0, d[2] + q0, d[3] + q0, d[4] + q0, dil, m1 - m0,
                             bt[0] + at, bt[1] + at, bt[2] + at, bt[3] + at, bt[4] + at);
        } else if constexpr (M == 2) {
          b_columns_2<kDil>(d[0] + q0, d[1] + q0, d[2] + q0, d[3] + q0, dil, m1 - m0, bt[0] + at,
                            bt[1] + at, bt[2] + at, bt[3] + at);
        } else {
          b_columns_4<kDil>(d[0] + q0, d[1] + q0, d[2] + q0, d[3] + q0, d[4] + q0, d[5] + q0, dil,
                            m1 - m0, bt[0] + at, bt[1] + at, bt[2] + at, bt[3] + at, bt[4] + at,
                            bt[5] + at);
        }
      }
      T* const out = v + ci * tiles + (r - r0) * g.tile_cols;
      for (int i = i0; i < i1; ++i) {
        for (int64_t s = 0; s < dil; ++s) {
          T* const o = out + i * n * step + s * phase_tiles;
          const T* p = bt[i] + s * phase_len;
          if constexpr (R == 2) {
            b_rows_42(p, phase_tiles, o, o + step, o + 2 * step, o + 3 * step, o + 4 * step);
          } else if constexpr (M == 2) {
            b_rows_2(p, phase_tiles, o, o + step, o + 2 * step, o + 3 * step);
          } else {
            b_rows_4(p, phase_tiles, o, o + step, o + 2 * step, o + 3 * step, o + 4 * step,
                     o + 5 * step);
          }
        }
      }
    }
  }
}

// The tile loops of transform_outputs (parameters __restrict, as for b_rows):
// for the n tiles of a tile row, m[e][k] at m + e step + k, the m x m output
// A^T m A + bias of tile k into columns m k ... of the rows y0, y1, ...
template <class T>
void a_transpose_tiles_2(const T* __restrict m, int64_t step, int64_t n, T bias, T* __restrict y0,
                         T* __restrict y1) {
  for (int64_t k = 0; k < n; ++k) {
    T am[2][4];  // A^T m
    for (int j = 0; j < 4; ++j) {
      am[0][j] = m[j * step + k] + m[(4 + j) * step + k] + m[(8 + j) * step + k];
      am[1][j] = m[(4 + j) * step + k] - m[(8 + j) * step + k] - m[(12 + j) * step + k];
    }
    y0[2 * k] = am[0][0] + am[0][1] + am[0][2] + bias;
    y0[2 * k + 1] = am[0][1] - am[0][2] - am[0][3] + bias;
    y1[2 * k] = am[1][0] + am[1][1] + am[1][2] + bias;
    y1[2 * k + 1] = am[1][1] - am[1][2] - am[1][3] + bias;
  }
}
template <class T>
void a_transpose_tiles_4(const T* __restrict m, int64_t step, int64_t n, T bias, T* __restrict y0,
                         T* __restrict y1, T* __restrict y2, T* __restrict y3) {
  for (int64_t k = 0; k < n; ++k) {
    T am[4][6];  // A^T m
    for (int j = 0; j < 6; ++j) {
      const T m0 = m[j * step + k], m1 = m[(6 + j) * step + k], m2 = m[(12 + j) * step + k];
      const T m3 = m[(18 + j) * step + k], m4 = m[(24 + j) * step + k], m5 = m[(30 + j) * step + k];
      const T sum12 = m1 + m2, diff12 = m1 - m2, sum34 = m3 + m4, diff34 = m3 - m4;
      am[0][j] = m0 + sum12 + sum34;
      am[1][j] = diff12 + T(2) * diff34;
      am[2][j] = sum12 + T(4) * sum34;
      am[3][j] = diff12 + T(8) * diff34 + m5;
    }
    T* const y[4] = {y0, y1, y2, y3};
    for (int i = 0; i < 4; ++i) {
      const T* a = am[i];
      const T sum12 = a[1] + a[2], diff12 = a[1] - a[2], sum34 = a[3] + a[4], diff34 = a[3] - a[4];
      y[i][4 * k] = a[0] + sum12 + sum34 + bias;
      y[i][4 * k + 1] = diff12 + T(2) * diff34 + bias;
      y[i][4 * k + 2] = sum12 + T(4) * sum34 + bias;
      y[i][4 * k + 3] = diff12 + T(8) * diff34 + a[5] + bias;
    }
  }
}

// F(4x4, 2x2): m[e][k] over 5 x 5 positions.
template <class T>
void a_transpose_tiles_42(const T* __restrict m, int64_t step, int64_t n, T bias, T* __restrict y0,
                          T* __restrict y1, T* __restrict y2, T* __restrict y3) {
  for (int64_t k = 0; k < n; ++k) {
    T am[4][5];  // A^T m
    for (int j = 0; j < 5; ++j) {
      const T m0 = m[j * step + k], m1 = m[(5 + j) * step + k], m2 = m[(10 + j) * step + k];
      const T m3 = m[(15 + j) * step + k], m4 = m[(20 + j) * step + k];
      const T sum12 = m1 + m2, diff12 = m1 - m2;
      am[0][j] = m0 + sum12 + m3;
      am[1][j] = diff12 + T(2) * m3;
      am[2][j] = sum12 + T(4) * m3;
      am[3][j] = diff12 + T(8) * m3 + m4;
    }
    T* const y[4] = {y0, y1, y2, y3};
    for (int i = 0; i < 4; ++i) {
      const T* a = am[i];
      const T sum12 = a[1] + a[2], diff12 = a[1] - a[2];
      y[i][4 * k] = a[0] + sum12 + a[3] + bias;
      y[i][4 * k + 1] = diff12 + T(2) * a[3] + bias;
      y[i][4 * k + 2] = sum12 + T(4) * a[3] + bias;
      y[i][4 * k + 3] = diff12 + T(8) * a[3] + a[4] + bias;
    }
  }
}

// y = (A^T m A) + bias (then max(., 0) with relu), or y += A^T m A when
// accumulating, for every tile of tile rows [r0, r1) of one image, m[e][co][t].
// Each tile row goes through m phase-major rows in `rows` (m out_width()
// values), so an output whose size is not a multiple of the tiling keeps only
// what fits.
template <int M, int kDil, int R = 3, class T>
void transform_outputs(const Tiling& g, const T* m, const T* bias, bool relu, int64_t r0, int64_t r1,
                       T* rows, T* y, bool accumulate) {
  const int64_t tiles = (r1 - r0) * g.tile_cols;
  const int64_t width = g.out_width(), dil = kDil ? kDil : g.dil;
  const int64_t step = position_stride(g.cout * tiles);
  for (int64_t co = 0; co < g.cout; ++co) {
    T* plane = y + co * g.ho * g.wo;
    const T b = bias ? bias[co] : T(0);
    for (int64_t r = r0; r < r1; ++r) {
      const T* mr = m + co * tiles + (r - r0) * g.tile_cols;
      if constexpr (R == 2) {
        a_transpose_tiles_42(mr, step, g.tile_cols, b, rows, rows + width, rows + 2 * width,
                             rows + 3 * width);
      } else if constexpr (M == 2) {
        a_transpose_tiles_2(mr, step, g.tile_cols, b, rows, rows + width);
      } else {
        a_transpose_tiles_4(mr, step, g.tile_cols, b, rows, rows + width, rows + 2 * width,
                            rows + 3 * width);
      }
      if (relu)
        for (int64_t j = 0; j < M * width; ++j) rows[j] = rows[j] > T(0) ? rows[j] : T(0);
      for (int i = 0; i < M && g.origin(r) + i * dil < g.ho; ++i) {
        phase_to_natural<kDil>(rows + i * width, g.wo, width, dil, accumulate,
                               plane + (g.origin(r) + i * dil) * g.wo);
      }
    }
  }
}

// Calls f(std::integral_constant<int, d>) with d the dilation dil when it is 1
// or 2 (COVID-Rate's common ones: the transforms' strides are then constants,
// which the vectorizer turns into contiguous loads and shuffles), else d = 0
// (the transforms read dil at run time).
template <class F> void with_dilation(int64_t dil, F&& f) {
  if (dil == 1) return f(std::integral_constant<int, 1>{});
  if (dil == 2) return f(std::integral_constant<int, 2>{});
  f(std::integral_constant<int, 0>{});
}

// The one scratch buffer of a call: the filters' position matrices U (or
// their gradients dU), then per chunk of work its V (transformed inputs), M
// (products, or transformed output gradients) for a band of `rows` tile rows,
// and the padded input rows the transforms read.
template <class T> struct BandScratch {
  size_t u_size, v_size, m_size, chunk_size;
  T* u;
  BandScratch(const Tiling& g, int64_t rows, int64_t chunks) {
    const int64_t band_tiles = rows * g.tile_cols;
    const int64_t p = positions(static_cast<int>(g.m), static_cast<int>(g.kernel));
    u_size = static_cast<size_t>(p * position_stride(g.cout * g.cin));
    v_size = static_cast<size_t>(p * position_stride(g.cin * band_tiles));
    m_size = static_cast<size_t>(p * position_stride(g.cout * band_tiles));
    const int64_t rows_size =
        patch_side(static_cast<int>(g.m), static_cast<int>(g.kernel)) * g.in_width() + g.w;  // transform_inputs' rows
    chunk_size = v_size + m_size + static_cast<size_t>(rows_size);
    u = scratch_buffer<T>(u_size + chunk_size * static_cast<size_t>(chunks));
  }
  T* v(int64_t chunk) const { return u + u_size + chunk_size * static_cast<size_t>(chunk); }
  T* m(int64_t chunk) const { return v(chunk) + v_size; }
  T* row_buffer(int64_t chunk) const { return m(chunk) + m_size; }
};

// The R x R stride-1 convolution of `batch` images x [cin, h, w] into y [cout, ho, wo]
// by F(M x M, R x R), g.m == M, g.kernel == R (see transform_filters for w and `transposed`).
template <int M, int R, class T>
void convolve(const Tiling& g, int64_t batch, const T* xs, const T* w, bool transposed, const T* bs,
              bool relu, T* ys, bool accumulate) {
  constexpr int kPositions = positions(M, R);
  const int threads = num_threads();
  // Tile rows per band: about band_tiles(M) tiles, every thread busy, scratch bounded.
  const auto row_bytes = static_cast<size_t>(kPositions * (g.cin + g.cout) * g.tile_cols) * sizeof(T);
  const int64_t rows = std::clamp<int64_t>(
      std::min({(band_tiles(M) + g.tile_cols - 1) / g.tile_cols,
                (batch * g.tile_rows + threads - 1) / threads,
                static_cast<int64_t>(kScratchBytes / (row_bytes * threads))}),
      1, g.tile_rows);
  const int64_t bands = (g.tile_rows + rows - 1) / rows;
  const int64_t chunks = chunk_count(batch * bands, 1);
  const int64_t filters = g.cout * g.cin;
  const BandScratch<T> scratch(g, rows, chunks);
  T* u = scratch.u;
  transform_filters<M, R>(w, g.cout, g.cin, transposed, u);

  parallel_chunks(batch * bands, chunks, [&](int64_t chunk, int64_t begin, int64_t end) {
    T* v = scratch.v(chunk);
    T* m = scratch.m(chunk);
    T* row_buffer = scratch.row_buffer(chunk);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / bands, r0 = item % bands * rows, r1 = std::min(g.tile_rows, r0 + rows);
      const int64_t tiles = (r1 - r0) * g.tile_cols;
      const T* x = xs + b * g.cin * g.h * g.w;
      T* y = ys + b * g.cout * g.ho * g.wo;
      with_dilation(g.dil, [&](auto dil) {
        transform_inputs<M, dil(), R>(g, x, r0, r1, 0, kPositions, row_buffer, v);
      });
      for (int e = 0; e < kPositions; ++e) {
        gemm(false, false, g.cout, tiles, g.cin, T(1), u + e * position_stride(filters), g.cin,
             v + e * position_stride(g.cin * tiles), tiles, T(0),
             m + e * position_stride(g.cout * tiles), tiles);
      }
      with_dilation(g.dil, [&](auto dil) {
        transform_outputs<M, dil(), R>(g, m, bs, relu, r0, r1, row_buffer, y, accumulate);
      });
    }
  });
}

// The tile side of a layer's forward and backward data passes. F(4x4) needs
// 0.56x F(2x2)'s products on a large map, but it pays more per tile: 36
// filter matrices streamed through the gemms of each band, and 36 transformed
// values per tile in loops over the tiles of a phase of a tile row. Measured
// with bench_conv's winograd/ family (2 threads, full-width layers), F(4x4) was
// 1.2-1.45x faster from 40x40 maps up, and 0.9-0.97x on the 22x22 and 32x32
// maps and on 44x44 at dilation 2, where an image has fewer than 100 of its
// tiles or a phase row fewer than 8. So: F(4x4) where it needs fewer products,
// has at least kMinTiles4 tiles per image and kMinPhaseTiles4 per phase row.
constexpr int64_t kMinTiles4 = 96, kMinPhaseTiles4 = 8;
int64_t choose_tile(int64_t ho, int64_t wo, int64_t dil) {
  const Tiling f4(4, 1, ho, wo, 1, ho, wo, 0, dil), f2(2, 1, ho, wo, 1, ho, wo, 0, dil);
  const bool fewer_products = f4.products() < f2.products();
  const bool enough_tiles =
      f4.tile_rows * f4.tile_cols >= kMinTiles4 && f4.phase_tiles() >= kMinPhaseTiles4;
  return fewer_products && enough_tiles ? 4 : 2;
}

// convolve<2, 3>, convolve<4, 3> or convolve<4, 2> by g.m and g.kernel.
template <class T>
void convolve_tiled(const Tiling& g, int64_t batch, const T* xs, const T* w, bool transposed,
                    const T* bs, bool relu, T* ys, bool accumulate) {
  if (g.kernel == 2) return convolve<4, 2>(g, batch, xs, w, transposed, bs, relu, ys, accumulate);
  if (g.m == 4) return convolve<4, 3>(g, batch, xs, w, transposed, bs, relu, ys, accumulate);
  convolve<2, 3>(g, batch, xs, w, transposed, bs, relu, ys, accumulate);
}

// The tile loop of transform_gradients: for the n tiles of a tile row, whose
// 2x2 gradients d are columns 2k, 2k+1 of top and bottom, row i of A d A^T
// into o0..o3, given row i of A as (a0, a1): (A d)[i][j] = a0 d[0][j] + a1 d[1][j]
// (exact, the coefficients being 0 and +-1), branch-free for every row.
template <class T>
void a_tiles(const T* __restrict top, const T* __restrict bottom, T a0, T a1, int64_t n,
             T* __restrict o0, T* __restrict o1, T* __restrict o2, T* __restrict o3) {
  for (int64_t k = 0; k < n; ++k) {
    const T ad0 = a0 * top[2 * k] + a1 * bottom[2 * k];
    const T ad1 = a0 * top[2 * k + 1] + a1 * bottom[2 * k + 1];
    o0[k] = ad0;
    o1[k] = ad0 + ad1;
    o2[k] = ad0 - ad1;
    o3[k] = -ad1;
  }
}

// dm[e][co][t] = (A dy A^T)[e] for the 2x2 output gradient under each tile t
// of tile rows [r0, r1) of one image (zero beyond the output), for the
// positions e in [e0, e1): the adjoint of transform_outputs. Rows of dy go
// through two phase-major rows in `rows` (2 out_width() values).
template <int kDil, class T>
void transform_gradients(const Tiling& g, const T* dy, int64_t r0, int64_t r1, int e0, int e1,
                         T* rows, T* dm) {
  // A = (A^T)^T, one row i of A d A^T at a time (see a_tiles).
  static constexpr T kA[4][2] = {{1, 0}, {1, 1}, {1, -1}, {0, -1}};
  const int64_t tiles = (r1 - r0) * g.tile_cols;
  const int64_t width = g.out_width(), dil = kDil ? kDil : g.dil;
  const int64_t step = position_stride(g.cout * tiles);
  const int i0 = e0 / 4, i1 = (e1 + 3) / 4;
  std::fill_n(rows, 2 * width, T(0));  // columns past wo stay zero
  for (int64_t co = 0; co < g.cout; ++co) {
    const T* plane = dy + co * g.ho * g.wo;
    for (int64_t r = r0; r < r1; ++r) {
      for (int i = 0; i < 2; ++i) {
        const int64_t oh = g.origin(r) + i * dil;
        if (oh < g.ho) {
          natural_to_phase<kDil>(plane + oh * g.wo, g.wo, width, dil, rows + i * width);
        } else {
          std::fill_n(rows + i * width, width, T(0));
        }
      }
      T* const out = dm + co * tiles + (r - r0) * g.tile_cols;
      for (int i = i0; i < i1; ++i) {
        T* const o = out + i * 4 * step;
        a_tiles(rows, rows + width, kA[i][0], kA[i][1], g.tile_cols, o, o + step, o + 2 * step,
                o + 3 * step);
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
// transforms input and gradient itself, for its own positions only (cheaper
// than sharing the transforms through a barrier per band).
template <class T> void filter_gradient(const Tiling& g, int64_t batch, const T* dys, const T* xs,
                                        T* dw) {
  constexpr int kPositions = positions(2);
  const int64_t chunks = chunk_count(kPositions, 1);
  const auto row_bytes =
      static_cast<size_t>(kPositions * (g.cin + g.cout) * g.tile_cols * chunks) * sizeof(T);
  const int64_t rows = std::clamp<int64_t>(
      std::min((band_tiles(2) + g.tile_cols - 1) / g.tile_cols,
               static_cast<int64_t>(kScratchBytes / row_bytes)),
      1, g.tile_rows);
  const int64_t filters = g.cout * g.cin;
  const BandScratch<T> scratch(g, rows, chunks);
  T* du = scratch.u;

  parallel_chunks(kPositions, chunks, [&](int64_t chunk, int64_t e0, int64_t e1) {
    T* v = scratch.v(chunk);
    T* dm = scratch.m(chunk);
    T* row_buffer = scratch.row_buffer(chunk);
    bool first = true;  // the first product of each dU[e] overwrites it
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t r0 = 0; r0 < g.tile_rows; r0 += rows, first = false) {
        const int64_t r1 = std::min(g.tile_rows, r0 + rows);
        const int64_t tiles = (r1 - r0) * g.tile_cols;
        const T* x = xs + b * g.cin * g.h * g.w;
        const T* dy = dys + b * g.cout * g.ho * g.wo;
        const int p0 = static_cast<int>(e0), p1 = static_cast<int>(e1);
        with_dilation(g.dil, [&](auto dil) {
          transform_inputs<2, dil()>(g, x, r0, r1, p0, p1, row_buffer, v);
          transform_gradients<dil()>(g, dy, r0, r1, p0, p1, row_buffer, dm);
        });
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

bool winograd_forward_applies(const Tensor& w, const ConvParams& p) {
  const bool phase_kernel = w.h() == 2 && w.w() == 2 && p.stride == 1 && p.dilation == 1 && p.pad <= 1;
  return winograd_applies(w, p) || (phase_kernel && p.inference);
}

void set_winograd_tile(int m) {
  if (m != 0 && m != 2 && m != 4)
    throw Error("set_winograd_tile: the tile side must be 0 (chosen per layer), 2 or 4, not " +
                std::to_string(m));
  forced_tile.store(m, std::memory_order_relaxed);
}

int winograd_tile(int64_t ho, int64_t wo, int64_t dilation, bool inference) {
  if (const int forced = forced_tile.load(std::memory_order_relaxed)) return forced;
  return inference ? static_cast<int>(choose_tile(ho, wo, dilation)) : 2;
}

void winograd_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const ConvParams& p,
                      Tensor& y) {
  const int64_t m = w.h() == 2 ? 4 : winograd_tile(y.h(), y.w(), p.dilation, p.inference);  // 2x2: F(4x4) only
  const Tiling g(m, x.c(), x.h(), x.w(), w.n(), y.h(), y.w(), p.pad, p.dilation, w.h());
  if (x.dtype() == DType::F64) {
    return convolve_tiled<double>(g, x.n(), x.data<double>(), w.data<double>(), false,
                                  bias ? bias->data<double>() : nullptr, p.relu, y.data<double>(), false);
  }
  convolve_tiled<float>(g, x.n(), x.data<float>(), w.data<float>(), false,
                        bias ? bias->data<float>() : nullptr, p.relu, y.data<float>(), false);
}

// dx is dy convolved with the transposed, 180-degree-rotated filters, same
// dilation, padding 2*dilation - pad: every output pixel that read x[ih, iw]
// through tap (i, j) sends its gradient back through the mirrored tap.
void winograd_backward_data(const Tensor& dy, const Tensor& w, const ConvParams& p, Tensor& dx,
                            bool accumulate) {
  const Tiling g(winograd_tile(dx.h(), dx.w(), p.dilation, /*inference=*/false), dy.c(), dy.h(), dy.w(),
                 dx.c(), dx.h(), dx.w(), 2 * p.dilation - p.pad, p.dilation);
  if (dy.dtype() == DType::F64) {
    return convolve_tiled<double>(g, dy.n(), dy.data<double>(), w.data<double>(), true, nullptr,
                                  false, dx.data<double>(), accumulate);
  }
  convolve_tiled<float>(g, dy.n(), dy.data<float>(), w.data<float>(), true, nullptr, false,
                        dx.data<float>(), accumulate);
}

void winograd_backward_filter(const Tensor& dy, const Tensor& x, const ConvParams& p, Tensor& dw) {
  const Tiling g(2, x.c(), x.h(), x.w(), dy.c(), dy.h(), dy.w(), p.pad, p.dilation);
  if (x.dtype() == DType::F64) {
    return filter_gradient<double>(g, x.n(), dy.data<double>(), x.data<double>(), dw.data<double>());
  }
  filter_gradient<float>(g, x.n(), dy.data<float>(), x.data<float>(), dw.data<float>());
}

}  // namespace covidrate::cpu
