// The hybrid loss of COVID-Rate: weighted BCE plus the focal Tversky loss (formulas
// in kernels/ops.h). The forward gathers four sums in one pass; the gradient of
// every pixel then follows from those sums alone, so the backward is one
// elementwise pass.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/loss_terms.h"

namespace covidrate::cpu {

LossSums hybrid_loss_forward(const Tensor& p, const Tensor& y, const HybridLossParams& params) {
  LossSums s;
  with_dtype(p, [&]<class T>() {
    const T* prob = p.data<T>();
    const T* target = y.data<T>();
    for (int64_t i = 0, n = p.numel(); i < n; ++i) {
      const double pi = prob[i], yi = target[i];
      s.tp += pi * yi;
      s.fn += (1.0 - pi) * yi;
      s.fp += pi * (1.0 - yi);
      // Only the log sees the clamped probability (as Keras clips inside its BCE).
      const double pc = std::clamp(pi, params.eps, 1.0 - params.eps);
      s.bce_sum -=
          (1.0 + params.pos_weight * yi) * (yi * std::log(pc) + (1.0 - yi) * std::log(1.0 - pc));
    }
  });
  s.count = p.numel();
  s.loss = hybrid_loss_value(params, s);
  return s;
}

// The gradient coefficients and their derivation: kernels/loss_terms.h.
void hybrid_loss_backward(const Tensor& p, const Tensor& y, const HybridLossParams& params,
                          const LossSums& sums, double dloss, Tensor& dp, bool accumulate) {
  const HybridLossCoefficients c = hybrid_loss_coefficients(params, sums);
  with_dtype(p, [&]<class T>() {
    const T* prob = p.data<T>();
    const T* target = y.data<T>();
    T* d = dp.data<T>();
    for (int64_t i = 0, n = p.numel(); i < n; ++i) {
      const double pi = prob[i], yi = target[i];
      double g = c.ftl_slope * (yi * c.dti_pos + (1.0 - yi) * c.dti_neg);
      // Outside [eps, 1-eps] the clamp is flat: no BCE gradient there.
      if (pi >= params.eps && pi <= 1.0 - params.eps)
        g -= c.bce_scale * (1.0 + params.pos_weight * yi) * (yi / pi - (1.0 - yi) / (1.0 - pi));
      store_grad(d[i], static_cast<T>(dloss * g), accumulate);
    }
  });
}

}  // namespace covidrate::cpu
