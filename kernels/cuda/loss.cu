// The fused hybrid loss (weighted BCE + focal Tversky, formulas in kernels/ops.h).
//
// Parallel strategy: the forward is ONE pass over p and y: each block streams a
// piece (float4 when aligned) and accumulates TP, FN, FP and the weighted BCE
// sum in double; one warp then adds the block partials in a fixed order
// (deterministic), and the four sums come back to the host, where the loss
// value is computed by the same expression as the CPU twin. The backward is
// ONE elementwise pass: every pixel's gradient follows from the four sums.
// Per-pixel arithmetic is in double like the CPU twin (the clamp at eps = 1e-7
// is below float resolution near 1); both kernels stay memory-bound.
#include <algorithm>
#include <cmath>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/row_kernels.cuh"
#include "kernels/loss_terms.h"

namespace covidrate::cuda {

namespace {

struct LossTerms {  // acc = {tp, fn, fp, bce_sum}
  double pos_weight, eps;
  __device__ void operator()(int64_t, const float (&v)[2], double (&acc)[4]) const {
    const double p = v[0], y = v[1];
    acc[0] += p * y;
    acc[1] += (1.0 - p) * y;
    acc[2] += p * (1.0 - y);
    // Only the log sees the clamped probability (as Keras clips inside its BCE).
    const double pc = fmin(fmax(p, eps), 1.0 - eps);
    acc[3] -= (1.0 + pos_weight * y) * (y * log(pc) + (1.0 - y) * log(1.0 - pc));
  }
};

struct StoreSums {
  double* out;
  __device__ void operator()(int64_t, const double (&sums)[4]) const {
    for (int k = 0; k < 4; ++k) out[k] = sums[k];
  }
};

struct LossGrad {  // v = {p, y}; coefficients and derivation in kernels/loss_terms.h
  double ftl_slope, dti_pos, dti_neg, bce_scale, pos_weight, eps, dloss;
  __device__ float operator()(int64_t, const float (&v)[2], float old) const {
    const double p = v[0], y = v[1];
    double g = ftl_slope * (y * dti_pos + (1.0 - y) * dti_neg);
    // Outside [eps, 1-eps] the clamp is flat: no BCE gradient there. Inside,
    // y/p - (1-y)/(1-p) = (y - p) / (p (1-p)): one division instead of two.
    if (p >= eps && p <= 1.0 - eps) g -= bce_scale * (1.0 + pos_weight * y) * ((y - p) / (p * (1.0 - p)));
    return old + static_cast<float>(dloss * g);
  }
};

}  // namespace

LossSums hybrid_loss_forward(const Tensor& p, const Tensor& y, const HybridLossParams& params) {
  const Inputs<2> in{{p.data<float>(), y.data<float>()}};
  Tensor totals = Tensor::empty(Shape{4}, DType::F64, Device::CUDA);
  const Partials partials =
      row_partials<4>(RowLayout{1, 1, 0, p.numel()}, in, LossTerms{params.pos_weight, params.eps});
  row_finish<4>(partials, StoreSums{totals.data<double>()});
  double host[4];
  CUDA_CHECK(cudaMemcpyAsync(host, totals.data<double>(), sizeof host, cudaMemcpyDeviceToHost,
                             context().stream));
  CUDA_CHECK(cudaStreamSynchronize(context().stream));

  LossSums s;
  s.tp = host[0];
  s.fn = host[1];
  s.fp = host[2];
  s.bce_sum = host[3];
  s.count = p.numel();
  s.loss = hybrid_loss_value(params, s);  // the CPU twin's expression (kernels/loss_terms.h)
  return s;
}

void hybrid_loss_backward(const Tensor& p, const Tensor& y, const HybridLossParams& params,
                          const LossSums& sums, double dloss, Tensor& dp, bool accumulate) {
  const HybridLossCoefficients c = hybrid_loss_coefficients(params, sums);  // shared with the CPU twin
  const LossGrad grad{c.ftl_slope, c.dti_pos, c.dti_neg, c.bce_scale, params.pos_weight, params.eps, dloss};
  row_map_into(accumulate, 1, p.numel(), Inputs<2>{{p.data<float>(), y.data<float>()}},
               dp.data<float>(), grad);
}

}  // namespace covidrate::cuda
