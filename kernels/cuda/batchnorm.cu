// Batch normalization over N, H, W per channel, on the GPU.
//
// Parallel strategy: a channel is rows = C, segments = N (one H*W run per
// sample, seg_stride = C*H*W) of the row layout in row_kernels.cuh, so every
// block works inside one channel and reads its per-channel values once.
//   train forward:  1. block partials of (x - x0) and (x - x0)^2 in double, with
//                      x0 the channel's first value (a shift that keeps the
//                      one-pass variance free of cancellation);
//                   2. one warp per channel totals the partials in a fixed order,
//                      writes batch stats, running stats, and y = x*scale + shift
//                      coefficients;
//                   3. a streaming map y = x*scale + shift.
//   backward:       1. block partials of dy and dy*xhat in double;
//                   2. fixed-order totals: dgamma/dbeta accumulate, dx coefficients;
//                   3. a streaming map dx = a*dy + b*(x - mean) + c0.
// One read of x for the statistics and one read-write pass for the output: the
// minimum traffic for a batch-statistics normalization. Deterministic (no atomics).
#include <cmath>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/row_kernels.cuh"

namespace covidrate::cuda {

namespace {

// ---------------------------------------------------------------- train forward
struct ShiftedMoments {  // acc += (d, d^2), d = x - x0[c]
  const float* x;
  int64_t hw;
  __device__ void operator()(int64_t c, const float (&v)[1], double (&acc)[2]) const {
    const double d = static_cast<double>(v[0]) - static_cast<double>(x[c * hw]);
    acc[0] += d;
    acc[1] += d * d;
  }
};

struct FinishTrainStats {
  const float* x;
  int64_t hw;
  int64_t count;  // N*H*W
  const float* gamma;
  const float* beta;
  float* running_mean;
  float* running_var;
  float* save_mean;
  float* save_invstd;
  float* coef;  // [C][2]: scale, shift
  double eps, momentum;
  __device__ void operator()(int64_t c, const double (&sums)[2]) const {
    const double m = static_cast<double>(count);
    const double mean_shifted = sums[0] / m;
    double sq = sums[1] - sums[0] * mean_shifted;  // sum of squared deviations
    if (sq < 0) sq = 0;                             // rounding can leave -tiny
    const double mean = static_cast<double>(x[c * hw]) + mean_shifted;
    const double var = sq / m;  // biased: what normalizes
    const double invstd = 1.0 / sqrt(var + eps);
    const double scale = gamma[c] * invstd;
    coef[2 * c] = static_cast<float>(scale);
    coef[2 * c + 1] = static_cast<float>(beta[c] - mean * scale);
    // The running variance estimates the population: unbiased, as PyTorch does.
    const double unbiased = sq / (m - 1.0);
    running_mean[c] = static_cast<float>((1.0 - momentum) * running_mean[c] + momentum * mean);
    running_var[c] = static_cast<float>((1.0 - momentum) * running_var[c] + momentum * unbiased);
    save_mean[c] = static_cast<float>(mean);
    save_invstd[c] = static_cast<float>(invstd);
  }
};

struct Affine {  // y = x * coef[c][0] + coef[c][1]
  const float* coef;
  __device__ float operator()(int64_t c, const float (&v)[1], float) const {
    return fmaf(v[0], coef[2 * c], coef[2 * c + 1]);
  }
};

// ---------------------------------------------------------------- inference
__global__ void infer_coef_kernel(const float* __restrict__ gamma, const float* __restrict__ beta,
                                  const float* __restrict__ mean, const float* __restrict__ var,
                                  double eps, int64_t channels, float* __restrict__ coef) {
  const int64_t c = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (c >= channels) return;
  const double scale = gamma[c] / sqrt(static_cast<double>(var[c]) + eps);
  coef[2 * c] = static_cast<float>(scale);
  coef[2 * c + 1] = static_cast<float>(beta[c] - mean[c] * scale);
}

// ---------------------------------------------------------------- backward
struct GradMoments {  // acc += (dy, dy * xhat)
  const float* mean;
  const float* invstd;
  __device__ void operator()(int64_t c, const float (&v)[2], double (&acc)[2]) const {
    const double dy = v[0];
    acc[0] += dy;
    acc[1] += dy * ((static_cast<double>(v[1]) - mean[c]) * invstd[c]);
  }
};

// dx = gamma*invstd/M * (M*dy - sum_dy - xhat*sum_dy_xhat)
//    = a*dy + b*(x - mean) + c0, with a = gamma*invstd,
//      b = -gamma*invstd^2*sum_dy_xhat/M, c0 = -gamma*invstd*sum_dy/M.
struct FinishGrad {
  const float* gamma;
  const float* mean;
  const float* invstd;
  int64_t count;
  float* dgamma;
  float* dbeta;
  float* coef;  // [C][4]: a, b, mean, c0
  __device__ void operator()(int64_t c, const double (&sums)[2]) const {
    const double m = static_cast<double>(count);
    const double is = invstd[c];
    const double factor = gamma[c] * is / m;
    coef[4 * c] = static_cast<float>(factor * m);
    coef[4 * c + 1] = static_cast<float>(-factor * sums[1] * is);
    coef[4 * c + 2] = mean[c];
    coef[4 * c + 3] = static_cast<float>(-factor * sums[0]);
    dgamma[c] += static_cast<float>(sums[1]);  // parameter gradients always accumulate
    dbeta[c] += static_cast<float>(sums[0]);
  }
};

struct GradMap {  // v = {dy, x}
  const float* coef;
  __device__ float operator()(int64_t c, const float (&v)[2], float old) const {
    const float* k = coef + 4 * c;
    return old + (k[0] * v[0] + (k[1] * (v[1] - k[2]) + k[3]));
  }
};

}  // namespace

void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const BatchNormParams& p, Tensor& running_mean, Tensor& running_var,
                             Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  const int64_t channels = x.c(), hw = x.h() * x.w(), stride = channels * hw;
  const float* in = x.data<float>();
  const Inputs<1> xs{{in}};
  const RowLayout per_channel{channels, x.n(), stride, hw};
  Tensor coef = Tensor::empty(Shape{2 * channels}, DType::F32, Device::CUDA);
  const Partials partials = row_partials<2>(per_channel, xs, ShiftedMoments{in, hw});
  row_finish<2>(partials,
                FinishTrainStats{in, hw, x.n() * hw, gamma.data<float>(), beta.data<float>(),
                                 running_mean.data<float>(), running_var.data<float>(),
                                 save_mean.data<float>(), save_invstd.data<float>(),
                                 coef.data<float>(), p.eps, p.momentum});
  row_map<false>(per_channel, xs, y.data<float>(), Affine{coef.data<float>()});
}

void batchnorm_forward_infer(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var,
                             const BatchNormParams& p, Tensor& y) {
  const int64_t channels = x.c(), hw = x.h() * x.w(), stride = channels * hw;
  if (channels == 0) return;
  Tensor coef = Tensor::empty(Shape{2 * channels}, DType::F32, Device::CUDA);
  const unsigned threads = 128;
  const auto blocks = static_cast<unsigned>((channels + threads - 1) / threads);
  infer_coef_kernel<<<blocks, threads, 0, context().stream>>>(
      gamma.data<float>(), beta.data<float>(), running_mean.data<float>(),
      running_var.data<float>(), p.eps, channels, coef.data<float>());
  CUDA_CHECK_LAUNCH("infer_coef_kernel");
  row_map<false>(RowLayout{channels, x.n(), stride, hw}, Inputs<1>{{x.data<float>()}}, y.data<float>(),
                 Affine{coef.data<float>()});
}

void batchnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma,
                        const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx,
                        Tensor& dgamma, Tensor& dbeta, bool accumulate) {
  const int64_t channels = x.c(), hw = x.h() * x.w(), stride = channels * hw;
  const Inputs<2> in{{dy.data<float>(), x.data<float>()}};
  const RowLayout per_channel{channels, x.n(), stride, hw};
  Tensor coef = Tensor::empty(Shape{4 * channels}, DType::F32, Device::CUDA);
  const Partials partials =
      row_partials<2>(per_channel, in, GradMoments{save_mean.data<float>(), save_invstd.data<float>()});
  row_finish<2>(partials,
                FinishGrad{gamma.data<float>(), save_mean.data<float>(), save_invstd.data<float>(),
                           x.n() * hw, dgamma.data<float>(), dbeta.data<float>(), coef.data<float>()});
  row_map_into(accumulate, per_channel, in, dx.data<float>(), GradMap{coef.data<float>()});
}

}  // namespace covidrate::cuda
