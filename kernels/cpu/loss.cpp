// The hybrid loss of COVID-Rate: weighted BCE plus the focal Tversky loss (formulas
// in kernels/ops.h). The forward gathers four sums in one pass; the gradient of
// every pixel then follows from those sums alone, so the backward is one
// elementwise pass.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"

namespace covidrate::cpu {

namespace {
double tversky_index(const HybridLossParams& q, const LossSums& s) {
  return (s.tp + q.smooth) / (s.tp + q.alpha * s.fn + q.beta * s.fp + q.smooth);
}
}  // namespace

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
  const double ti = tversky_index(params, s);
  s.loss = params.bce_weight * s.bce_sum / static_cast<double>(s.count) +
           params.kappa * std::pow(std::max(1.0 - ti, 0.0), 1.0 / params.gamma);
  return s;
}

// dL/dp_i = bce_weight/M * dBCE_i/dp_i + kappa * d(1-TI)^(1/gamma)/dp_i, where TI
// depends on p_i through all three sums: dTP/dp_i = y_i, dFN/dp_i = -y_i,
// dFP/dp_i = 1 - y_i. With num = TP + smooth and den = TP + alpha FN + beta FP + smooth:
//   dTI/dp_i = (y_i * den - num * ((1 - alpha) y_i + beta (1 - y_i))) / den^2
//   d(1-TI)^(1/g)/dp_i = -(1/g) (1-TI)^(1/g - 1) dTI/dp_i
// At TI = 1 (no false pixel at all) the derivative of the power is infinite for
// gamma > 1; we return 0 there instead: the loss is at its minimum, and an
// infinite gradient would only poison the step with Inf. (For gamma <= 1 the
// power is finite there and is used as is.)
void hybrid_loss_backward(const Tensor& p, const Tensor& y, const HybridLossParams& params,
                          const LossSums& sums, double dloss, Tensor& dp, bool accumulate) {
  const double num = sums.tp + params.smooth;
  const double den = sums.tp + params.alpha * sums.fn + params.beta * sums.fp + params.smooth;
  const double one_minus_ti = 1.0 - num / den;
  const bool finite_slope = one_minus_ti > 0 || params.gamma <= 1;
  const double ftl_slope =
      finite_slope ? -params.kappa / params.gamma * std::pow(one_minus_ti, 1.0 / params.gamma - 1.0)
                   : 0.0;
  // The two possible values of dTI/dp_i (y is binary in COVID-Rate; for soft targets
  // the expression is linear in y_i, so mixing the two stays exact).
  const double dti_pos = (den - num * (1.0 - params.alpha)) / (den * den);  // y_i = 1
  const double dti_neg = -num * params.beta / (den * den);                  // y_i = 0
  const double bce_scale = params.bce_weight / static_cast<double>(sums.count);
  with_dtype(p, [&]<class T>() {
    const T* prob = p.data<T>();
    const T* target = y.data<T>();
    T* d = dp.data<T>();
    for (int64_t i = 0, n = p.numel(); i < n; ++i) {
      const double pi = prob[i], yi = target[i];
      double g = ftl_slope * (yi * dti_pos + (1.0 - yi) * dti_neg);
      // Outside [eps, 1-eps] the clamp is flat: no BCE gradient there.
      if (pi >= params.eps && pi <= 1.0 - params.eps)
        g -= bce_scale * (1.0 + params.pos_weight * yi) * (yi / pi - (1.0 - yi) / (1.0 - pi));
      store_grad(d[i], static_cast<T>(dloss * g), accumulate);
    }
  });
}

}  // namespace covidrate::cpu
