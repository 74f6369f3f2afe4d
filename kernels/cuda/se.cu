// The residual squeeze-and-excitation block on the GPU:
//   z = gap(x) [N,C];  h = relu(z w1^T) [N,Cr];  s = sigmoid(h w2^T) [N,C];  y = x*(1 + s)
//
// Parallel strategy (the big tensors are read as few times as possible; the
// tiny FC part runs in one block per sample from shared memory):
//   forward   1. block partials of sum_hw x per (n, c)        (reads x once)
//             2. one block per sample: totals the partials into z, then
//                FC-ReLU-FC-sigmoid in shared memory, saves z, h, s
//             3. streaming map y = x * (1 + s[n, c])            (reads x, writes y)
//   backward  1. block partials of sum_hw dy*x per (n, c)     (reads dy, x)
//                (dL/ds is all the FC chain needs: the path through z only needs
//                 dz, which the chain itself produces, so no sum of dy is taken)
//             2. one block per sample: ds -> pre-sigmoid grad -> dh -> ReLU ->
//                dz / HW; per-sample gradients go to small scratch buffers
//             3. dw2 += sum_n, dw1 += sum_n: one thread per weight, samples
//                added in order (deterministic, no atomics)
//             4. streaming map dx = dy*(1 + s) + dz/HW          (reads dy, writes dx)
// Every dot product is summed in a fixed order: reruns are bit-identical.
// The forward also runs on bf16 tensors (x, w1, w2, y and the saved z, h, s):
// the pooling sums in double and the FC chain runs in f32 from shared memory;
// only what is stored is rounded. y reads the stored (rounded) s, within one
// bf16 ulp of using the f32 s (the relative error of 1 + s is at most 2^-10).
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/row_kernels.cuh"

namespace covidrate::cuda {

namespace {

constexpr int kFcThreads = 256;
constexpr int kFcWarps = kFcThreads / 32;

// Lane-strided dot product of a[0..n) and b[0..n) over a warp, reduced in a
// fixed shuffle order; every lane gets the result.
template <class A>
__device__ inline float warp_dot(const A* a, int64_t a_stride, const float* b, int64_t n) {
  const int lane = threadIdx.x % 32;
  float sum = 0.f;
  for (int64_t k = lane; k < n; k += 32) sum += to_float(a[k * a_stride]) * b[k];
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  return sum;
}

struct SumTerm {
  __device__ void operator()(int64_t, const float (&v)[1], double (&acc)[1]) const { acc[0] += v[0]; }
};
struct DotTerm {
  __device__ void operator()(int64_t, const float (&v)[2], double (&acc)[1]) const {
    acc[0] += static_cast<double>(v[0]) * static_cast<double>(v[1]);
  }
};

// One block per sample n. Shared memory: z[C], h[Cr], in f32 whatever T is.
template <class T>
__global__ void __launch_bounds__(kFcThreads)
    se_fc_forward_kernel(const double* __restrict__ partials, int64_t per_row, int64_t c_count,
                         int64_t cr_count, double hw, const T* __restrict__ w1,
                         const T* __restrict__ w2, T* __restrict__ pooled,
                         T* __restrict__ hidden, T* __restrict__ scale) {
  extern __shared__ float smem[];
  float* z = smem;
  float* h = smem + c_count;
  const int64_t n = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t c = warp; c < c_count; c += kFcWarps) {
    double total[1];
    warp_row_total(partials, n * c_count + c, per_row, total);
    if (lane == 0) {
      z[c] = static_cast<float>(total[0] / hw);
      pooled[n * c_count + c] = from_float<T>(z[c]);
    }
  }
  __syncthreads();
  for (int64_t j = warp; j < cr_count; j += kFcWarps) {  // h = relu(w1 z), w1 is [Cr, C]
    const float a = warp_dot(w1 + j * c_count, 1, z, c_count);
    if (lane == 0) {
      h[j] = a > 0.f ? a : 0.f;
      hidden[n * cr_count + j] = from_float<T>(h[j]);
    }
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < c_count; c += blockDim.x) {  // s = sigmoid(w2 h), w2 is [C, Cr]
    float a = 0.f;
    for (int64_t j = 0; j < cr_count; ++j) a += to_float(w2[c * cr_count + j]) * h[j];
    scale[n * c_count + c] = from_float<T>(sigmoid(a));
  }
}

// One block per sample n. Shared memory: da2[C], da1[Cr].
__global__ void __launch_bounds__(kFcThreads)
    se_fc_backward_kernel(const double* __restrict__ partials, int64_t per_row, int64_t c_count,
                          int64_t cr_count, float inv_hw, const float* __restrict__ w1,
                          const float* __restrict__ w2, const float* __restrict__ hidden,
                          const float* __restrict__ scale, float* __restrict__ da2_out,
                          float* __restrict__ da1_out, float* __restrict__ dz_over_hw) {
  extern __shared__ float smem[];
  float* da2 = smem;
  float* da1 = smem + c_count;
  const int64_t n = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t c = warp; c < c_count; c += kFcWarps) {  // dL/ds, then through the sigmoid
    double total[1];
    warp_row_total(partials, n * c_count + c, per_row, total);
    if (lane == 0) {
      const float s = scale[n * c_count + c];
      da2[c] = static_cast<float>(total[0]) * s * (1.f - s);
      da2_out[n * c_count + c] = da2[c];
    }
  }
  __syncthreads();
  for (int64_t j = warp; j < cr_count; j += kFcWarps) {  // dh = w2^T da2, then through the ReLU
    const float dh = warp_dot(w2 + j, cr_count, da2, c_count);
    if (lane == 0) {
      da1[j] = hidden[n * cr_count + j] > 0.f ? dh : 0.f;
      da1_out[n * cr_count + j] = da1[j];
    }
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < c_count; c += blockDim.x) {  // dz = w1^T da1
    float a = 0.f;
    for (int64_t j = 0; j < cr_count; ++j) a += w1[j * c_count + c] * da1[j];
    dz_over_hw[n * c_count + c] = a * inv_hw;
  }
}

// dw2[c, j] += sum_n da2[n, c] h[n, j];  dw1[j, c] += sum_n da1[n, j] z[n, c].
// Thread i < C*Cr owns dw2 element i, thread C*Cr + i owns dw1 element i.
__global__ void se_weight_grad_kernel(int64_t batch, int64_t c_count, int64_t cr_count,
                                      const float* __restrict__ da2, const float* __restrict__ hidden,
                                      const float* __restrict__ da1, const float* __restrict__ pooled,
                                      float* __restrict__ dw2, float* __restrict__ dw1) {
  const int64_t per = c_count * cr_count;
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= 2 * per) return;
  if (i < per) {
    const int64_t c = i / cr_count, j = i % cr_count;
    float sum = 0.f;
    for (int64_t n = 0; n < batch; ++n) sum += da2[n * c_count + c] * hidden[n * cr_count + j];
    dw2[i] += sum;
  } else {
    const int64_t k = i - per;
    const int64_t j = k / c_count, c = k % c_count;
    float sum = 0.f;
    for (int64_t n = 0; n < batch; ++n) sum += da1[n * cr_count + j] * pooled[n * c_count + c];
    dw1[k] += sum;
  }
}

template <class T> struct ScaleResidual {  // y = x * (1 + s[row])
  const T* s;
  __device__ float operator()(int64_t row, const float (&v)[1], float) const {
    return v[0] * (1.f + to_float(s[row]));
  }
};
struct GradMap {  // dx = dy * (1 + s[row]) + dz[row]/HW
  const float* s;
  const float* dz_over_hw;
  __device__ float operator()(int64_t row, const float (&v)[1], float old) const {
    return old + (v[0] * (1.f + s[row]) + dz_over_hw[row]);
  }
};

size_t fc_shared_bytes(const char* op, int64_t c, int64_t cr) {
  const size_t bytes = static_cast<size_t>(c + cr) * sizeof(float);
  CR_CHECK(bytes <= 48 * 1024, op << ": " << c << " channels and " << cr
                                  << " hidden units do not fit the 48 KiB of shared memory of the fused FC kernel");
  return bytes;
}

}  // namespace

void se_forward(const Tensor& x, const Tensor& w1, const Tensor& w2, Tensor& y, SeSaved& saved) {
  const int64_t batch = x.n(), c = x.c(), cr = w1.n(), hw = x.h() * x.w();
  const size_t smem = fc_shared_bytes("se_forward", c, cr);
  if (batch * c == 0) return;
  with_element_type(x, [&]<class T>() {
    const Inputs<1, T> xs{{elements<T>(x)}};
    const Partials partials = row_partials<1>(RowLayout{batch * c, 1, 0, hw}, xs, SumTerm{});
    se_fc_forward_kernel<<<static_cast<unsigned>(batch), kFcThreads, smem, context().stream>>>(
        partials.data(), partials.per_row, c, cr, static_cast<double>(hw), elements<T>(w1),
        elements<T>(w2), elements<T>(saved.pooled), elements<T>(saved.hidden), elements<T>(saved.scale));
    CUDA_CHECK_LAUNCH("se_fc_forward_kernel");
    row_map<false>(batch * c, hw, xs, elements<T>(y), ScaleResidual<T>{elements<T>(saved.scale)});
  });
}

void se_backward(const Tensor& dy, const Tensor& x, const Tensor& w1, const Tensor& w2,
                 const SeSaved& saved, Tensor& dx, Tensor& dw1, Tensor& dw2, bool accumulate) {
  const int64_t batch = x.n(), c = x.c(), cr = w1.n(), hw = x.h() * x.w();
  const size_t smem = fc_shared_bytes("se_backward", c, cr);
  if (batch * c == 0) return;
  const Inputs<2> in{{dy.data<float>(), x.data<float>()}};
  const Partials partials = row_partials<1>(RowLayout{batch * c, 1, 0, hw}, in, DotTerm{});

  Tensor da2 = Tensor::empty(Shape{batch, c}, DType::F32, Device::CUDA);
  Tensor da1 = Tensor::empty(Shape{batch, cr > 0 ? cr : 1}, DType::F32, Device::CUDA);
  Tensor dz_over_hw = Tensor::empty(Shape{batch, c}, DType::F32, Device::CUDA);
  const cudaStream_t s = context().stream;
  se_fc_backward_kernel<<<static_cast<unsigned>(batch), kFcThreads, smem, s>>>(
      partials.data(), partials.per_row, c, cr, 1.f / static_cast<float>(hw),
      w1.data<float>(), w2.data<float>(), saved.hidden.data<float>(), saved.scale.data<float>(),
      da2.data<float>(), da1.data<float>(), dz_over_hw.data<float>());
  CUDA_CHECK_LAUNCH("se_fc_backward_kernel");

  const int64_t weights = 2 * c * cr;
  if (weights > 0) {
    se_weight_grad_kernel<<<static_cast<unsigned>((weights + 255) / 256), 256, 0, s>>>(
        batch, c, cr, da2.data<float>(), saved.hidden.data<float>(), da1.data<float>(),
        saved.pooled.data<float>(), dw2.data<float>(), dw1.data<float>());
    CUDA_CHECK_LAUNCH("se_weight_grad_kernel");
  }

  const Inputs<1> dys{{dy.data<float>()}};
  row_map_into(accumulate, batch * c, hw, dys, dx.data<float>(),
               GradMap{saved.scale.data<float>(), dz_over_hw.data<float>()});
}

}  // namespace covidrate::cuda
