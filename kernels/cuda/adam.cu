// Adam (Keras 2 flavour, formula in kernels/ops.h) over flat parameter buffers.
// Parallel strategy: one streaming kernel reads w, g, m, v and writes w, m, v
// (28 bytes per parameter, the minimum), float4 when all four buffers are
// 16-byte aligned; the step size lr_t is computed once on the host in double,
// as the CPU twin does, and the per-element float arithmetic follows the CPU
// twin's expression order.
#include <cmath>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/row_kernels.cuh"

namespace covidrate::cuda {

namespace {

struct AdamConsts {
  float b1, one_minus_b1, b2, one_minus_b2, step_size, eps;
};

__device__ inline void adam_update(const AdamConsts& k, float g, float& w, float& m, float& v) {
  m = k.b1 * m + k.one_minus_b1 * g;
  v = k.b2 * v + k.one_minus_b2 * g * g;
  w -= k.step_size * m / (sqrtf(v) + k.eps);
}

template <int V>
__global__ void __launch_bounds__(kRowThreads)
    adam_kernel(RowPlan plan, AdamConsts k, float* __restrict__ w, const float* __restrict__ g,
                float* __restrict__ m, float* __restrict__ v) {
  const BlockPiece bp = block_piece(plan);
  for (int64_t i = bp.begin + int64_t{threadIdx.x} * V; i < bp.end; i += int64_t{blockDim.x} * V) {
    if constexpr (V == 4) {
      float4 w4 = *reinterpret_cast<const float4*>(w + i);
      const float4 g4 = *reinterpret_cast<const float4*>(g + i);
      float4 m4 = *reinterpret_cast<const float4*>(m + i);
      float4 v4 = *reinterpret_cast<const float4*>(v + i);
      adam_update(k, g4.x, w4.x, m4.x, v4.x);
      adam_update(k, g4.y, w4.y, m4.y, v4.y);
      adam_update(k, g4.z, w4.z, m4.z, v4.z);
      adam_update(k, g4.w, w4.w, m4.w, v4.w);
      *reinterpret_cast<float4*>(w + i) = w4;
      *reinterpret_cast<float4*>(m + i) = m4;
      *reinterpret_cast<float4*>(v + i) = v4;
    } else {
      adam_update(k, g[i], w[i], m[i], v[i]);
    }
  }
}

}  // namespace

void adam_step(Tensor& params, const Tensor& grads, Tensor& m, Tensor& v, const AdamParams& p,
               int64_t step) {
  const int64_t n = params.numel();
  if (n == 0) return;
  const double t = static_cast<double>(step);
  const double lr_t = p.lr / (1.0 + p.decay * (t - 1.0)) * std::sqrt(1.0 - std::pow(p.beta2, t)) /
                      (1.0 - std::pow(p.beta1, t));
  const float b1 = static_cast<float>(p.beta1), b2 = static_cast<float>(p.beta2);
  // 1 - beta in double before rounding, as the CPU twin: in float, 1 - 0.999f is off by 5e-5 relative.
  const AdamConsts k{b1, static_cast<float>(1.0 - p.beta1), b2, static_cast<float>(1.0 - p.beta2),
                     static_cast<float>(lr_t), static_cast<float>(p.eps)};
  float* w = params.data<float>();
  const float* g = grads.data<float>();
  float* mp = m.data<float>();
  float* vp = v.data<float>();
  const bool aligned = aligned16(w) && aligned16(g) && aligned16(mp) && aligned16(vp);
  const RowLayout flat{1, 1, 0, n};
  const cudaStream_t s = context().stream;
  if (vec_width(aligned, flat) == 4) {
    static const int per_sm = resident_blocks_per_sm(adam_kernel<4>);
    const RowPlan plan = plan_rows(flat, 4, per_sm);
    adam_kernel<4><<<static_cast<unsigned>(plan.blocks()), kRowThreads, 0, s>>>(plan, k, w, g, mp, vp);
  } else {
    static const int per_sm = resident_blocks_per_sm(adam_kernel<1>);
    const RowPlan plan = plan_rows(flat, 1, per_sm);
    adam_kernel<1><<<static_cast<unsigned>(plan.blocks()), kRowThreads, 0, s>>>(plan, k, w, g, mp, vp);
  }
  CUDA_CHECK_LAUNCH("adam_kernel");
}

}  // namespace covidrate::cuda
