// Batch normalization over N, H, W per channel. Channel statistics are summed in
// double for both element types: a channel of a CT batch holds millions of values.
// Channels are independent, so they are spread over threads; each channel's sums
// stay on one thread in a fixed order, keeping results bit-identical for any
// thread count.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/threads.h"

namespace covidrate::cpu {

namespace {
// Runs body(c) for every channel, several channels per thread when channels are
// small, so that waking a worker is paid only for real work.
template <class Body> void for_each_channel(int64_t channels, int64_t per_channel, Body body) {
  const int64_t min_channels =
      std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, per_channel));
  parallel_for(channels, min_channels, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) body(c);
  });
}
}  // namespace

void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const BatchNormParams& p, Tensor& running_mean, Tensor& running_var,
                             Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  with_dtype(x, [&]<class T>() {
    const T* in = x.data<T>();
    const T* g = gamma.data<T>();
    const T* b = beta.data<T>();
    T* rm = running_mean.data<T>();
    T* rv = running_var.data<T>();
    T* out = y.data<T>();
    T* sm = save_mean.data<T>();
    T* si = save_invstd.data<T>();
    const int64_t channels = x.c(), hw = x.h() * x.w(), count = x.n() * hw;
    for_each_channel(channels, count, [&](int64_t c) {
      // Two passes (mean, then squared deviations): no cancellation as in E[x^2] - E[x]^2.
      double sum = 0;
      for (int64_t n = 0; n < x.n(); ++n) {
        const T* plane = in + (n * channels + c) * hw;
        sum += sum_in_double(hw, [&](int64_t i) { return double{plane[i]}; });
      }
      const double mean = sum / static_cast<double>(count);
      double sq = 0;
      for (int64_t n = 0; n < x.n(); ++n) {
        const T* plane = in + (n * channels + c) * hw;
        sq += sum_in_double(hw, [&](int64_t i) {
          const double d = plane[i] - mean;
          return d * d;
        });
      }
      const double var = sq / static_cast<double>(count);  // biased: what normalizes
      const double invstd = 1.0 / std::sqrt(var + p.eps);
      const double scale = g[c] * invstd, shift = b[c] - mean * scale;
      for (int64_t n = 0; n < x.n(); ++n)
        for (int64_t i = 0; i < hw; ++i) {
          const int64_t k = (n * channels + c) * hw + i;
          out[k] = static_cast<T>(in[k] * scale + shift);
        }
      // The running variance estimates the population: unbiased, as PyTorch does.
      const double unbiased = sq / static_cast<double>(count - 1);
      rm[c] = static_cast<T>((1.0 - p.momentum) * rm[c] + p.momentum * mean);
      rv[c] = static_cast<T>((1.0 - p.momentum) * rv[c] + p.momentum * unbiased);
      sm[c] = static_cast<T>(mean);
      si[c] = static_cast<T>(invstd);
    });
  });
}

void batchnorm_forward_infer(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var,
                             const BatchNormParams& p, Tensor& y) {
  with_dtype(x, [&]<class T>() {
    const T* in = x.data<T>();
    const T* g = gamma.data<T>();
    const T* b = beta.data<T>();
    const T* rm = running_mean.data<T>();
    const T* rv = running_var.data<T>();
    T* out = y.data<T>();
    const int64_t channels = x.c(), hw = x.h() * x.w();
    for (int64_t n = 0; n < x.n(); ++n)
      for (int64_t c = 0; c < channels; ++c) {
        const double scale = g[c] / std::sqrt(static_cast<double>(rv[c]) + p.eps);
        const double shift = b[c] - rm[c] * scale;
        const int64_t base = (n * channels + c) * hw;
        for (int64_t i = 0; i < hw; ++i)
          out[base + i] = static_cast<T>(in[base + i] * scale + shift);
      }
  });
}

// With xhat = (x - mean) * invstd and M values per channel:
//   dbeta = sum dy,  dgamma = sum dy * xhat,
//   dx = gamma * invstd / M * (M * dy - dbeta - xhat * dgamma)
// (the batch mean and variance depend on every x of the channel; this is the closed form).
void batchnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma,
                        const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx,
                        Tensor& dgamma, Tensor& dbeta, bool accumulate) {
  with_dtype(x, [&]<class T>() {
    const T* g = dy.data<T>();
    const T* in = x.data<T>();
    const T* gm = gamma.data<T>();
    const T* sm = save_mean.data<T>();
    const T* si = save_invstd.data<T>();
    T* d = dx.data<T>();
    T* dg = dgamma.data<T>();
    T* db = dbeta.data<T>();
    const int64_t channels = x.c(), hw = x.h() * x.w(), count = x.n() * hw;
    for_each_channel(channels, count, [&](int64_t c) {
      const double mean = sm[c], invstd = si[c];
      double sum_dy = 0, sum_dy_centered = 0;
      for (int64_t n = 0; n < x.n(); ++n) {
        const T* gp = g + (n * channels + c) * hw;
        const T* xp = in + (n * channels + c) * hw;
        sum_dy += sum_in_double(hw, [&](int64_t i) { return double{gp[i]}; });
        sum_dy_centered += sum_in_double(hw, [&](int64_t i) { return gp[i] * (xp[i] - mean); });
      }
      const double sum_dy_xhat = sum_dy_centered * invstd;
      const double m = static_cast<double>(count);
      const double factor = gm[c] * invstd / m;
      for (int64_t n = 0; n < x.n(); ++n) {
        const int64_t base = (n * channels + c) * hw;
        store_grads(d + base, 0, hw, accumulate, [&](int64_t i) {
          const double xhat = (in[base + i] - mean) * invstd;
          return static_cast<T>(factor * (m * g[base + i] - sum_dy - xhat * sum_dy_xhat));
        });
      }
      dg[c] += static_cast<T>(sum_dy_xhat);  // parameter gradients: always accumulate
      db[c] += static_cast<T>(sum_dy);
    });
  });
}

}  // namespace covidrate::cpu
