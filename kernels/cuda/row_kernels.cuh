// The two kernel shapes that most CUDA twins are made of, over a "row layout":
//
//   element (row r, segment g, position j) lives at  g * seg_stride + r * len + j
//
// Per-(n, c) work on NCHW is rows = N*C, one segment of len = H*W; per-channel
// work (batch norm) is rows = C with N segments of H*W each, seg_stride = C*H*W;
// a flat buffer is one row of len = numel.
//
//   row_map:      out[i] = f(row, in_0[i], ..., in_{N-1}[i], out[i])
//   row_partials: per block, acc[K] = sum of f(row, in_0[i], ...) in double,
//                 followed by a fixed-order per-row total (warp_row_total / row_finish).
//
// WHY this shape: these ops are memory-bound at full CT resolution (32 x 512 x 512
// floats per sample), so what matters is (1) enough independent loads in flight:
// every block streams one contiguous piece of one row with float4 loads when all
// pointers are 16-byte aligned and rows are multiples of 4 (checked at run time,
// scalar loads otherwise); (2) enough blocks to fill every SM: rows are cut into
// pieces until there are about 8 blocks of 256 threads per SM; (3) no 64-bit
// integer division per element: the row of a block is decoded once from
// blockIdx, so per-channel parameters cost one cached load, not a divide.
//
// Determinism: a launch's plan depends only on the shape and the SM count, each
// thread adds its elements in a fixed order, blocks reduce through a fixed
// shuffle tree, and per-row totals add the block partials in a fixed order.
// No float atomics anywhere, so reruns are bit-identical.
#pragma once
#include <cstdint>

#include "kernels/cuda/cuda_common.h"
#include "nn/tensor.h"

namespace covidrate::cuda {

constexpr int kRowThreads = 256;

template <int N> struct Inputs {
  const float* p[N > 0 ? N : 1];
};

struct RowPlan {
  int64_t rows = 0, segs = 1, seg_stride = 0, len = 0;
  int64_t pieces = 1;     // pieces per (row, segment): one block each
  int64_t piece_len = 4;  // a multiple of 4, so float4 pieces stay aligned
  int vec = 1;            // 4: float4 loads and stores, 1: scalar
  int64_t blocks() const { return rows * segs * pieces; }
  int64_t partials_per_row() const { return segs * pieces; }
};

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Cuts the rows into pieces (see the header comment). all_aligned: every
// pointer the kernel touches is 16-byte aligned.
inline RowPlan plan_rows(int64_t rows, int64_t segs, int64_t seg_stride, int64_t len,
                         bool all_aligned) {
  RowPlan p;
  p.rows = rows;
  p.segs = segs;
  p.seg_stride = seg_stride;
  p.len = len;
  p.vec = (all_aligned && len % 4 == 0 && seg_stride % 4 == 0) ? 4 : 1;
  const int sms = context().sm_count > 0 ? context().sm_count : 1;
  const int64_t target_blocks = int64_t{sms} * (2048 / kRowThreads);
  // A piece is worth a block when every thread gets at least one float4.
  const int64_t min_piece = int64_t{kRowThreads} * 4;
  const int64_t units = rows * segs > 0 ? rows * segs : 1;
  int64_t pieces = (target_blocks + units - 1) / units;
  const int64_t max_pieces = (len + min_piece - 1) / min_piece;
  if (pieces > max_pieces) pieces = max_pieces;
  if (pieces < 1) pieces = 1;
  int64_t piece_len = (len + pieces - 1) / pieces;
  piece_len = (piece_len + 3) / 4 * 4;
  if (piece_len < 4) piece_len = 4;
  p.piece_len = piece_len;
  p.pieces = (len + piece_len - 1) / piece_len;
  if (p.pieces < 1) p.pieces = 1;
  CR_CHECK(p.blocks() <= 0x7fffffff, "CUDA row kernel: " << rows << " x " << segs << " rows of "
                                                          << len << " elements need too many blocks");
  return p;
}

// Where a block works: its row, and the element range [begin, end) as absolute indices.
struct BlockPiece {
  int64_t row, begin, end;
};
__device__ inline BlockPiece block_piece(const RowPlan& p) {
  const int64_t b = blockIdx.x;
  const int64_t piece = b % p.pieces;
  const int64_t unit = b / p.pieces;
  const int64_t seg = unit % p.segs;
  const int64_t row = unit / p.segs;
  const int64_t base = seg * p.seg_stride + row * p.len;
  const int64_t start = piece * p.piece_len;
  const int64_t stop = start + p.piece_len < p.len ? start + p.piece_len : p.len;
  return {row, base + start, base + stop};
}

// ---------------------------------------------------------------- map
// F: __device__ float operator()(int64_t row, const float (&v)[N], float old) const;
// `old` is out[i] when kReadOut, else 0 (out is never read then: it may be uninitialized).
// out may be one of the inputs (in place): each element is read, then written,
// by the same thread, so `out` is deliberately not __restrict__.
template <int V, int N, bool kReadOut, class F>
__global__ void __launch_bounds__(kRowThreads)
    row_map_kernel(RowPlan plan, Inputs<N> in, float* out, F f) {
  const BlockPiece bp = block_piece(plan);
  for (int64_t i = bp.begin + int64_t{threadIdx.x} * V; i < bp.end; i += int64_t{blockDim.x} * V) {
    float v[V][N > 0 ? N : 1];
    float old[V];
    if constexpr (V == 4) {
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const float4 q = *reinterpret_cast<const float4*>(in.p[k] + i);
        v[0][k] = q.x; v[1][k] = q.y; v[2][k] = q.z; v[3][k] = q.w;
      }
      float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
      if constexpr (kReadOut) o = *reinterpret_cast<const float4*>(out + i);
      old[0] = o.x; old[1] = o.y; old[2] = o.z; old[3] = o.w;
    } else {
#pragma unroll
      for (int k = 0; k < N; ++k) v[0][k] = in.p[k][i];
      old[0] = kReadOut ? out[i] : 0.f;
    }
    float r[V];
#pragma unroll
    for (int l = 0; l < V; ++l) {
      float lane_in[N > 0 ? N : 1];
#pragma unroll
      for (int k = 0; k < N; ++k) lane_in[k] = v[l][k];
      r[l] = f(bp.row, lane_in, old[l]);
    }
    if constexpr (V == 4) {
      *reinterpret_cast<float4*>(out + i) = make_float4(r[0], r[1], r[2], r[3]);
    } else {
      out[i] = r[0];
    }
  }
}

// out and the inputs all follow the layout of the plan; build the plan with
// map_plan so that `out` is part of the alignment check.
template <bool kReadOut, int N, class F>
void row_map(const RowPlan& plan, const Inputs<N>& in, float* out, F f) {
  if (plan.rows * plan.segs * plan.len == 0) return;
  const cudaStream_t s = context().stream;
  const auto blocks = static_cast<unsigned>(plan.blocks());
  if (plan.vec == 4) {
    row_map_kernel<4, N, kReadOut><<<blocks, kRowThreads, 0, s>>>(plan, in, out, f);
  } else {
    row_map_kernel<1, N, kReadOut><<<blocks, kRowThreads, 0, s>>>(plan, in, out, f);
  }
  CUDA_CHECK_LAUNCH("row_map_kernel");
}

template <int N>
RowPlan map_plan(const Inputs<N>& in, const float* out, int64_t rows, int64_t segs,
                 int64_t seg_stride, int64_t len) {
  bool aligned = aligned16(out);
  for (int k = 0; k < N; ++k) aligned = aligned && aligned16(in.p[k]);
  return plan_rows(rows, segs, seg_stride, len, aligned);
}

// The common case: `rows` contiguous rows of `len` elements.
template <bool kReadOut, int N, class F>
void row_map(int64_t rows, int64_t len, const Inputs<N>& in, float* out, F f) {
  row_map<kReadOut>(map_plan(in, out, rows, 1, 0, len), in, out, f);
}

// The same op choosing overwrite or accumulate from a run-time flag.
template <int N, class F>
void row_map_into(bool accumulate, const RowPlan& plan, const Inputs<N>& in, float* out, F f) {
  if (accumulate) {
    row_map<true>(plan, in, out, f);
  } else {
    row_map<false>(plan, in, out, f);
  }
}
template <int N, class F>
void row_map_into(bool accumulate, int64_t rows, int64_t len, const Inputs<N>& in, float* out, F f) {
  row_map_into(accumulate, map_plan(in, out, rows, 1, 0, len), in, out, f);
}

// The logistic function in the stable form of the CPU twin: exp of a
// non-positive number never overflows, and tiny outputs keep their precision.
__device__ inline float sigmoid(float x) {
  const float e = expf(-fabsf(x));
  return x >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
}

// ---------------------------------------------------------------- reductions
template <int K> __device__ inline void warp_sum(double (&a)[K]) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
#pragma unroll
    for (int k = 0; k < K; ++k) a[k] += __shfl_xor_sync(0xffffffffu, a[k], off);
  }
}

// Sums a[K] over the block; the result is valid in thread 0. blockDim.x must be
// a multiple of 32 and at most 1024.
template <int K> __device__ inline void block_sum(double (&a)[K]) {
  __shared__ double warp_totals[K][32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  warp_sum(a);
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) warp_totals[k][warp] = a[k];
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x / 32;
#pragma unroll
    for (int k = 0; k < K; ++k) a[k] = lane < warps ? warp_totals[k][lane] : 0.0;
    warp_sum(a);
  }
}

// F: __device__ void operator()(int64_t row, const float (&v)[N], double (&acc)[K]) const.
// Writes partials[(row * partials_per_row + block-of-row) * K + k].
template <int V, int N, int K, class F>
__global__ void __launch_bounds__(kRowThreads)
    row_partials_kernel(RowPlan plan, Inputs<N> in, double* __restrict__ partials, F f) {
  const BlockPiece bp = block_piece(plan);
  double acc[K];
#pragma unroll
  for (int k = 0; k < K; ++k) acc[k] = 0.0;
  for (int64_t i = bp.begin + int64_t{threadIdx.x} * V; i < bp.end; i += int64_t{blockDim.x} * V) {
    float v[V][N];
    if constexpr (V == 4) {
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const float4 q = *reinterpret_cast<const float4*>(in.p[k] + i);
        v[0][k] = q.x; v[1][k] = q.y; v[2][k] = q.z; v[3][k] = q.w;
      }
    } else {
#pragma unroll
      for (int k = 0; k < N; ++k) v[0][k] = in.p[k][i];
    }
#pragma unroll
    for (int l = 0; l < V; ++l) {
      float lane_in[N];
#pragma unroll
      for (int k = 0; k < N; ++k) lane_in[k] = v[l][k];
      f(bp.row, lane_in, acc);
    }
  }
  block_sum(acc);
  if (threadIdx.x == 0) {
    const int64_t slot = blockIdx.x;  // blocks of one row are consecutive: slot = row * per_row + j
#pragma unroll
    for (int k = 0; k < K; ++k) partials[slot * K + k] = acc[k];
  }
}

// Launches row_partials_kernel; the caller owns `partials`
// (plan.rows * plan.partials_per_row() * K doubles, see partials_count).
template <int N, int K, class F>
void row_partials(const RowPlan& plan, const Inputs<N>& in, double* partials, F f) {
  if (plan.blocks() == 0) return;
  const cudaStream_t s = context().stream;
  const auto blocks = static_cast<unsigned>(plan.blocks());
  if (plan.vec == 4) {
    row_partials_kernel<4, N, K><<<blocks, kRowThreads, 0, s>>>(plan, in, partials, f);
  } else {
    row_partials_kernel<1, N, K><<<blocks, kRowThreads, 0, s>>>(plan, in, partials, f);
  }
  CUDA_CHECK_LAUNCH("row_partials_kernel");
}

template <int N>
RowPlan plan_reduction(const Inputs<N>& in, int64_t rows, int64_t segs, int64_t seg_stride,
                       int64_t len) {
  bool aligned = true;
  for (int k = 0; k < N; ++k) aligned = aligned && aligned16(in.p[k]);
  return plan_rows(rows, segs, seg_stride, len, aligned);
}

// The total of one row's partials, called by all 32 lanes of a warp; every lane
// gets the same result. Fixed order: lane l adds partials l, l+32, ... then a
// fixed shuffle tree.
template <int K>
__device__ inline void warp_row_total(const double* __restrict__ partials, int64_t row,
                                      int64_t per_row, double (&sums)[K]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int k = 0; k < K; ++k) sums[k] = 0.0;
  const double* p = partials + row * per_row * K;
  for (int64_t j = lane; j < per_row; j += 32) {
#pragma unroll
    for (int k = 0; k < K; ++k) sums[k] += p[j * K + k];
  }
  warp_sum(sums);
}

// One warp per row: totals the partials, then lane 0 calls
// fin(row, const double (&sums)[K]) to write the row's results.
template <int K, class Fin>
__global__ void row_finish_kernel(const double* __restrict__ partials, int64_t rows,
                                  int64_t per_row, Fin fin) {
  const int64_t row = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 32;
  if (row >= rows) return;  // whole warps leave together: rows are warp-uniform
  double sums[K];
  warp_row_total(partials, row, per_row, sums);
  if (threadIdx.x % 32 == 0) fin(row, sums);
}

template <int K, class Fin>
void row_finish(const RowPlan& plan, const double* partials, Fin fin) {
  if (plan.rows == 0) return;
  constexpr int kWarpsPerBlock = 8;
  const auto blocks = static_cast<unsigned>((plan.rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  row_finish_kernel<K><<<blocks, kWarpsPerBlock * 32, 0, context().stream>>>(
      partials, plan.rows, plan.partials_per_row(), fin);
  CUDA_CHECK_LAUNCH("row_finish_kernel");
}

// Device scratch for the partials of a plan (stream-ordered: freed memory is
// reused only by later work on the same stream).
inline Tensor partials_buffer(const RowPlan& plan, int k) {
  const int64_t n = plan.rows * plan.partials_per_row() * k;
  return Tensor::empty(Shape{n > 0 ? n : 1}, DType::F64, Device::CUDA);
}

}  // namespace covidrate::cuda
