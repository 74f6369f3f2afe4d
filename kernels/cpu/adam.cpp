// Adam as in Keras 2 (the authors' framework): bias correction folded into the
// step size, eps added to sqrt(v) without correction, and the time-based decay
// lr / (1 + decay * (t - 1)). See kernels/ops.h for the formula.
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/threads.h"

namespace covidrate::cpu {

void adam_step(Tensor& params, const Tensor& grads, Tensor& m, Tensor& v, const AdamParams& p,
               int64_t step) {
  const double t = static_cast<double>(step);
  const double lr_t = p.lr / (1.0 + p.decay * (t - 1.0)) * std::sqrt(1.0 - std::pow(p.beta2, t)) /
                      (1.0 - std::pow(p.beta1, t));
  with_dtype(params, [&]<class T>() {
    T* w = params.data<T>();
    const T* g = grads.data<T>();
    T* mp = m.data<T>();
    T* vp = v.data<T>();
    // 1 - beta in double before rounding: in float, 1 - 0.999f is off by 5e-5 relative.
    const T b1 = static_cast<T>(p.beta1), b2 = static_cast<T>(p.beta2);
    const T one_minus_b1 = static_cast<T>(1.0 - p.beta1),
            one_minus_b2 = static_cast<T>(1.0 - p.beta2);
    const T step_size = static_cast<T>(lr_t), eps = static_cast<T>(p.eps);
    parallel_for(params.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        mp[i] = b1 * mp[i] + one_minus_b1 * g[i];
        vp[i] = b2 * vp[i] + one_minus_b2 * g[i] * g[i];
        w[i] -= step_size * mp[i] / (std::sqrt(vp[i]) + eps);
      }
    });
  });
}

}  // namespace covidrate::cpu
