// The host-side arithmetic of the hybrid loss, shared by the CPU and CUDA twins
// so that both compute the value and the gradient coefficients identically.
// The per-pixel passes stay in each twin; formulas in kernels/ops.h.
#pragma once
#include <algorithm>
#include <cmath>

#include "kernels/ops.h"

namespace covidrate {

// L = bce_weight * BCE_sum / M + kappa * (1 - TI)^(1/gamma)
inline double hybrid_loss_value(const HybridLossParams& q, const LossSums& s) {
  const double ti = (s.tp + q.smooth) / (s.tp + q.alpha * s.fn + q.beta * s.fp + q.smooth);
  return q.bce_weight * s.bce_sum / static_cast<double>(s.count) +
         q.kappa * std::pow(std::max(1.0 - ti, 0.0), 1.0 / q.gamma);
}

// dL/dp_i = ftl_slope * (y_i dti_pos + (1 - y_i) dti_neg)
//           - bce_scale * (1 + pos_weight y_i) (y_i/p_i - (1-y_i)/(1-p_i))   (inside [eps, 1-eps])
//
// TI depends on p_i through all three sums: dTP/dp_i = y_i, dFN/dp_i = -y_i,
// dFP/dp_i = 1 - y_i. With num = TP + smooth and den = TP + alpha FN + beta FP + smooth:
//   dTI/dp_i = (y_i * den - num * ((1 - alpha) y_i + beta (1 - y_i))) / den^2
//   d(1-TI)^(1/g)/dp_i = -(1/g) (1-TI)^(1/g - 1) dTI/dp_i
// dTI/dp_i takes two values (y is binary in COVID-Rate; for soft targets the
// expression is linear in y_i, so mixing the two stays exact).
// At TI = 1 (no false pixel at all) the derivative of the power is infinite for
// gamma > 1; the slope is 0 there instead: the loss is at its minimum, and an
// infinite gradient would only poison the step with Inf. (For gamma <= 1 the
// power is finite there and is used as is.)
struct HybridLossCoefficients {
  double ftl_slope;  // -kappa/gamma (1-TI)^(1/gamma - 1)
  double dti_pos;    // dTI/dp_i where y_i = 1
  double dti_neg;    // dTI/dp_i where y_i = 0
  double bce_scale;  // bce_weight / M
};

inline HybridLossCoefficients hybrid_loss_coefficients(const HybridLossParams& q, const LossSums& s) {
  const double num = s.tp + q.smooth;
  const double den = s.tp + q.alpha * s.fn + q.beta * s.fp + q.smooth;
  const double one_minus_ti = 1.0 - num / den;
  const bool finite_slope = one_minus_ti > 0 || q.gamma <= 1;
  HybridLossCoefficients c;
  c.ftl_slope = finite_slope ? -q.kappa / q.gamma * std::pow(one_minus_ti, 1.0 / q.gamma - 1.0) : 0.0;
  c.dti_pos = (den - num * (1.0 - q.alpha)) / (den * den);
  c.dti_neg = -num * q.beta / (den * den);
  c.bce_scale = q.bce_weight / static_cast<double>(s.count);
  return c;
}

}  // namespace covidrate
