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
// scalar loads otherwise); (2) every SM busy until the end: rows are cut into
// pieces until the grid is one full wave of resident blocks (the occupancy
// the compiled kernel allows, times the SM count), so no half-empty second
// wave leaves SMs idle at the tail; (3) no 64-bit
// integer division per element: the row of a block is decoded once from
// blockIdx, so per-channel parameters cost one cached load, not a divide.
//
// Element types: inputs and output are float or a 16-bit storage type
// (__nv_bfloat16, __half); the functors always see and return float, so a
// 16-bit op loads, computes in f32, and stores rounded to nearest even. Four
// elements move as one 16-byte (float) or 8-byte (16-bit) access.
//
// Determinism: a launch's plan depends only on the shape, the kernel and the GPU, each
// thread adds its elements in a fixed order, blocks reduce through a fixed
// shuffle tree, and per-row totals add the block partials in a fixed order.
// No float atomics anywhere, so reruns are bit-identical.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/cuda_common.h"
#include "nn/tensor.h"

namespace covidrate::cuda {

constexpr int kRowThreads = 256;

template <int N, class T = float> struct Inputs {
  const T* p[N > 0 ? N : 1];
};

// ---------------------------------------------------------------- element types
// The device type of a tensor's elements (the dtype must match: ops::* checked it).
template <class T> T* elements(Tensor& t) {
  if constexpr (std::is_same_v<T, float>) {
    return t.data<float>();
  } else {
    constexpr DType want = std::is_same_v<T, __nv_bfloat16> ? DType::BF16 : DType::F16;
    CR_CHECK(t.dtype() == want, "CUDA kernel: tensor " << t.str() << " is not " << to_string(want));
    return static_cast<T*>(t.raw());
  }
}
template <class T> const T* elements(const Tensor& t) { return elements<T>(const_cast<Tensor&>(t)); }

// Runs fn.template operator()<T>() with T = __nv_bfloat16 for a BF16 tensor,
// float otherwise (ops::* accepts only these two on the GPU).
template <class Fn> void with_element_type(const Tensor& t, Fn&& fn) {
  if (t.dtype() == DType::BF16) {
    fn.template operator()<__nv_bfloat16>();
  } else {
    fn.template operator()<float>();
  }
}

__device__ inline float to_float(float v) { return v; }
__device__ inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ inline float to_float(__half v) { return __half2float(v); }
template <class T> __device__ inline T from_float(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return __float2half_rn(v);
  }
}

// Four consecutive elements as one aligned access.
template <class T> struct alignas(4 * sizeof(T)) Quad {
  T v[4];
};
template <class T> __device__ inline void load4(const T* p, float (&out)[4]) {
  if constexpr (std::is_same_v<T, float>) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    out[0] = q.x; out[1] = q.y; out[2] = q.z; out[3] = q.w;
  } else {
    const Quad<T> q = *reinterpret_cast<const Quad<T>*>(p);
#pragma unroll
    for (int l = 0; l < 4; ++l) out[l] = to_float(q.v[l]);
  }
}
template <class T> __device__ inline void store4(T* p, const float (&in)[4]) {
  if constexpr (std::is_same_v<T, float>) {
    *reinterpret_cast<float4*>(p) = make_float4(in[0], in[1], in[2], in[3]);
  } else {
    // Rounded in pairs (one cvt.rn.bf16x2.f32 each), then one 64-bit store: per
    // element, or through a uint2, nvcc emits four or two narrower stores (read in the PTX).
    using Pair2 = std::conditional_t<std::is_same_v<T, __nv_bfloat16>, __nv_bfloat162, __half2>;
    Pair2 pair[2];
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      pair[0] = __floats2bfloat162_rn(in[0], in[1]);
      pair[1] = __floats2bfloat162_rn(in[2], in[3]);
    } else {
      pair[0] = __floats2half2_rn(in[0], in[1]);
      pair[1] = __floats2half2_rn(in[2], in[3]);
    }
    const unsigned long long lo = *reinterpret_cast<const unsigned*>(&pair[0]);
    const unsigned long long hi = *reinterpret_cast<const unsigned*>(&pair[1]);
    *reinterpret_cast<unsigned long long*>(p) = lo | (hi << 32);  // little-endian: pair[0] first
  }
}

// Which elements a launch covers (see the header comment).
struct RowLayout {
  int64_t rows = 0, segs = 1, seg_stride = 0, len = 0;
};

struct RowPlan {
  RowLayout layout;
  int64_t pieces = 1;     // pieces per (row, segment): one block each
  int64_t piece_len = 4;  // a multiple of 4, so float4 pieces stay aligned
  int vec = 1;            // 4: float4 loads and stores, 1: scalar
  int64_t blocks() const { return layout.rows * layout.segs * pieces; }
  int64_t partials_per_row() const { return layout.segs * pieces; }
};

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
// Whether p can be read four elements at a time.
template <class T> bool quad_aligned(const T* p) { return reinterpret_cast<uintptr_t>(p) % (4 * sizeof(T)) == 0; }

// Four-element accesses need every pointer aligned to four elements and every run a multiple of 4.
inline int vec_width(bool all_aligned, const RowLayout& l) {
  return all_aligned && l.len % 4 == 0 && l.seg_stride % 4 == 0 ? 4 : 1;
}

// How many blocks of kRowThreads threads of `kernel` fit on one SM at once.
template <class Kernel> int resident_blocks_per_sm(Kernel kernel) {
  int blocks = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kRowThreads, 0));
  return blocks > 0 ? blocks : 1;
}

// Cuts the rows into pieces so that the grid is about one full wave.
inline RowPlan plan_rows(const RowLayout& l, int vec, int blocks_per_sm) {
  RowPlan p;
  p.layout = l;
  p.vec = vec;
  const int sms = context().sm_count > 0 ? context().sm_count : 1;
  const int64_t wave = int64_t{sms} * blocks_per_sm;
  // A piece is worth a block when every thread gets at least one float4.
  const int64_t min_piece = int64_t{kRowThreads} * 4;
  const int64_t units = l.rows * l.segs > 0 ? l.rows * l.segs : 1;
  // Rounded down: one block too many would start a second, nearly empty wave.
  int64_t pieces = wave / units;
  const int64_t max_pieces = (l.len + min_piece - 1) / min_piece;
  if (pieces > max_pieces) pieces = max_pieces;
  if (pieces < 1) pieces = 1;
  int64_t piece_len = (l.len + pieces - 1) / pieces;
  piece_len = (piece_len + 3) / 4 * 4;
  if (piece_len < 4) piece_len = 4;
  p.piece_len = piece_len;
  p.pieces = (l.len + piece_len - 1) / piece_len;
  if (p.pieces < 1) p.pieces = 1;
  CR_CHECK(p.blocks() <= 0x7fffffff, "CUDA row kernel: " << l.rows << " x " << l.segs << " rows of "
                                                          << l.len << " elements need too many blocks");
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
  const int64_t seg = unit % p.layout.segs;
  const int64_t row = unit / p.layout.segs;
  const int64_t base = seg * p.layout.seg_stride + row * p.layout.len;
  const int64_t start = piece * p.piece_len;
  const int64_t stop = start + p.piece_len < p.layout.len ? start + p.piece_len : p.layout.len;
  return {row, base + start, base + stop};
}

// ---------------------------------------------------------------- map
// F: __device__ float operator()(int64_t row, const float (&v)[N], float old) const;
// `old` is out[i] when kReadOut, else 0 (out is never read then: it may be uninitialized).
// out may be one of the inputs (in place): each element is read, then written,
// by the same thread, so `out` is deliberately not __restrict__.
template <int V, int N, bool kReadOut, class In, class Out, class F>
__global__ void __launch_bounds__(kRowThreads)
    row_map_kernel(RowPlan plan, Inputs<N, In> in, Out* out, F f) {
  const BlockPiece bp = block_piece(plan);
  for (int64_t i = bp.begin + int64_t{threadIdx.x} * V; i < bp.end; i += int64_t{blockDim.x} * V) {
    float v[V][N > 0 ? N : 1];
    float old[V] = {};
    if constexpr (V == 4) {
#pragma unroll
      for (int k = 0; k < N; ++k) {
        float q[4];
        load4(in.p[k] + i, q);
        v[0][k] = q[0]; v[1][k] = q[1]; v[2][k] = q[2]; v[3][k] = q[3];
      }
      if constexpr (kReadOut) load4(out + i, old);
    } else {
#pragma unroll
      for (int k = 0; k < N; ++k) v[0][k] = to_float(in.p[k][i]);
      if constexpr (kReadOut) old[0] = to_float(out[i]);
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
      store4(out + i, r);
    } else {
      out[i] = from_float<Out>(r[0]);
    }
  }
}

template <int V, int N, bool kReadOut, class In, class Out, class F> int map_blocks_per_sm() {
  static const int blocks = resident_blocks_per_sm(row_map_kernel<V, N, kReadOut, In, Out, F>);
  return blocks;
}

// out and every input follow `layout`.
template <bool kReadOut, int N, class In, class Out, class F>
void row_map(const RowLayout& layout, const Inputs<N, In>& in, Out* out, F f) {
  if (layout.rows * layout.segs * layout.len == 0) return;
  bool aligned = quad_aligned(out);
  for (int k = 0; k < N; ++k) aligned = aligned && quad_aligned(in.p[k]);
  const int vec = vec_width(aligned, layout);
  const cudaStream_t s = context().stream;
  if (vec == 4) {
    const RowPlan plan = plan_rows(layout, 4, map_blocks_per_sm<4, N, kReadOut, In, Out, F>());
    row_map_kernel<4, N, kReadOut><<<static_cast<unsigned>(plan.blocks()), kRowThreads, 0, s>>>(plan, in, out, f);
  } else {
    const RowPlan plan = plan_rows(layout, 1, map_blocks_per_sm<1, N, kReadOut, In, Out, F>());
    row_map_kernel<1, N, kReadOut><<<static_cast<unsigned>(plan.blocks()), kRowThreads, 0, s>>>(plan, in, out, f);
  }
  CUDA_CHECK_LAUNCH("row_map_kernel");
}

// The common case: `rows` contiguous rows of `len` elements.
template <bool kReadOut, int N, class In, class Out, class F>
void row_map(int64_t rows, int64_t len, const Inputs<N, In>& in, Out* out, F f) {
  row_map<kReadOut>(RowLayout{rows, 1, 0, len}, in, out, f);
}

// The same op choosing overwrite or accumulate from a run-time flag.
template <int N, class F>
void row_map_into(bool accumulate, const RowLayout& layout, const Inputs<N>& in, float* out, F f) {
  if (accumulate) {
    row_map<true>(layout, in, out, f);
  } else {
    row_map<false>(layout, in, out, f);
  }
}
template <int N, class F>
void row_map_into(bool accumulate, int64_t rows, int64_t len, const Inputs<N>& in, float* out, F f) {
  row_map_into(accumulate, RowLayout{rows, 1, 0, len}, in, out, f);
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
template <int V, int N, int K, class In, class F>
__global__ void __launch_bounds__(kRowThreads)
    row_partials_kernel(RowPlan plan, Inputs<N, In> in, double* __restrict__ partials, F f) {
  const BlockPiece bp = block_piece(plan);
  double acc[K];
#pragma unroll
  for (int k = 0; k < K; ++k) acc[k] = 0.0;
  for (int64_t i = bp.begin + int64_t{threadIdx.x} * V; i < bp.end; i += int64_t{blockDim.x} * V) {
    float v[V][N];
    if constexpr (V == 4) {
#pragma unroll
      for (int k = 0; k < N; ++k) {
        float q[4];
        load4(in.p[k] + i, q);
        v[0][k] = q[0]; v[1][k] = q[1]; v[2][k] = q[2]; v[3][k] = q[3];
      }
    } else {
#pragma unroll
      for (int k = 0; k < N; ++k) v[0][k] = to_float(in.p[k][i]);
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

// The block partials of a reduction: K doubles per block, the blocks of row r
// at [r * per_row, (r + 1) * per_row). Device scratch, stream-ordered: freed
// memory is reused only by later work on the same stream.
struct Partials {
  Tensor buffer;  // F64 on the GPU
  int64_t rows = 0, per_row = 0;
  const double* data() const { return buffer.data<double>(); }
};

template <int V, int N, int K, class In, class F> int partials_blocks_per_sm() {
  static const int blocks = resident_blocks_per_sm(row_partials_kernel<V, N, K, In, F>);
  return blocks;
}

// Launches row_partials_kernel over `layout` (all inputs follow it).
template <int K, int N, class In, class F>
Partials row_partials(const RowLayout& layout, const Inputs<N, In>& in, F f) {
  bool aligned = true;
  for (int k = 0; k < N; ++k) aligned = aligned && quad_aligned(in.p[k]);
  const int vec = vec_width(aligned, layout);
  const RowPlan plan = plan_rows(layout, vec, vec == 4 ? partials_blocks_per_sm<4, N, K, In, F>()
                                                       : partials_blocks_per_sm<1, N, K, In, F>());
  Partials out;
  out.rows = layout.rows;
  out.per_row = plan.partials_per_row();
  const int64_t count = plan.blocks() * K;
  out.buffer = Tensor::empty(Shape{count > 0 ? count : 1}, DType::F64, Device::CUDA);
  if (plan.blocks() == 0) return out;
  const cudaStream_t s = context().stream;
  const auto blocks = static_cast<unsigned>(plan.blocks());
  double* dst = out.buffer.data<double>();
  if (vec == 4) {
    row_partials_kernel<4, N, K><<<blocks, kRowThreads, 0, s>>>(plan, in, dst, f);
  } else {
    row_partials_kernel<1, N, K><<<blocks, kRowThreads, 0, s>>>(plan, in, dst, f);
  }
  CUDA_CHECK_LAUNCH("row_partials_kernel");
  return out;
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
void row_finish(const Partials& partials, Fin fin) {
  if (partials.rows == 0) return;
  constexpr int kWarpsPerBlock = 8;
  const auto blocks = static_cast<unsigned>((partials.rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  row_finish_kernel<K><<<blocks, kWarpsPerBlock * 32, 0, context().stream>>>(
      partials.data(), partials.rows, partials.per_row, fin);
  CUDA_CHECK_LAUNCH("row_finish_kernel");
}

}  // namespace covidrate::cuda
