// Direct convolution for tiny filter banks (see conv_direct.h for when and why).
// Parallel strategy: a 1-D grid-stride loop over groups of kPixels consecutive
// output pixels (in (n, i, j) order); one thread owns a group and keeps all
// kCout output channels of each pixel in registers. The block first copies
// the filter bank into shared memory as [tap][kCout] floats (tap = (c, dy,
// dx); zeros beyond the real output count), reading the weights in their own
// order (coalesced). The inner loop then reads each tap's kCout weights as
// float4 broadcasts (every thread of a warp reads the same address), each
// feeding 4 x kPixels FMAs: with one scalar shared load per FMA the loads,
// not the arithmetic, set the speed (they issue at about a quarter of the FMA
// rate). Input reads are coalesced along j and neighbouring pixels' taps
// overlap in L1. The grid is one wave of resident blocks.
// Summation order: c, then dy, then dx, in f32, the bias last; one rounding
// when stored.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/conv_direct.h"
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/row_kernels.cuh"

namespace covidrate::cuda {

namespace {

constexpr int kThreads = 128;

// Sizes of one image fit in int (planes below 2^30 elements, checked by
// direct_conv_applies); offsets that include the image or channel index are
// int64 or pointer steps.
struct Geometry {
  int64_t n;
  int cin, h, w;     // input
  int cout, ho, wo;  // output
  int kh, kw, stride, pad, dilation;
};

// Two pixels per thread while their accumulators fit in registers.
template <int kCout> constexpr int pixels_per_thread() { return kCout <= 32 ? 2 : 1; }

template <int kCout, bool kRelu, class T>
__global__ void __launch_bounds__(kThreads)
    direct_conv_kernel(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                       T* __restrict__ y, Geometry g) {
  constexpr int kPixels = pixels_per_thread<kCout>();
  extern __shared__ float4 bank4[];  // [taps][kCout] floats; float4 for 16-byte alignment
  float* bank = reinterpret_cast<float*>(bank4);
  const int taps = g.cin * g.kh * g.kw;
  for (int e = threadIdx.x; e < taps * g.cout; e += blockDim.x) {  // weight[o][tap], in memory order
    const int o = e / taps, tap = e - o * taps;
    bank[tap * kCout + o] = to_float(weight[e]);
  }
  const int padding = kCout - g.cout;
  for (int e = threadIdx.x; e < taps * padding; e += blockDim.x) bank[e / padding * kCout + g.cout + e % padding] = 0.f;
  __syncthreads();

  const int out_plane = g.ho * g.wo, in_plane = g.h * g.w;
  const int64_t total = g.n * out_plane, groups = (total + kPixels - 1) / kPixels;
  for (int64_t q = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; q < groups;
       q += int64_t{gridDim.x} * blockDim.x) {
    // Pixel s of the group: its input window's corner, its input and output planes.
    const T* in[kPixels];
    T* out[kPixels];
    int top[kPixels], left[kPixels];
    bool stored[kPixels];
#pragma unroll
    for (int s = 0; s < kPixels; ++s) {
      const int64_t p = std::min(q * kPixels + s, total - 1);  // a short last group repeats its last pixel
      stored[s] = q * kPixels + s < total;
      const int64_t image = p / out_plane;
      const int pixel = static_cast<int>(p - image * out_plane);
      const int i = pixel / g.wo, j = pixel - i * g.wo;
      top[s] = i * g.stride - g.pad;
      left[s] = j * g.stride - g.pad;
      in[s] = x + image * g.cin * in_plane;
      out[s] = y + image * g.cout * out_plane + pixel;
    }

    float acc[kPixels][kCout];
#pragma unroll
    for (int s = 0; s < kPixels; ++s)
#pragma unroll
      for (int o = 0; o < kCout; ++o) acc[s][o] = 0.f;
    const float* tap_weights = bank;
    for (int c = 0; c < g.cin; ++c) {
      for (int dy = 0; dy < g.kh; ++dy) {
        for (int dx = 0; dx < g.kw; ++dx, tap_weights += kCout) {
          float v[kPixels];
#pragma unroll
          for (int s = 0; s < kPixels; ++s) {
            const int row = top[s] + dy * g.dilation, col = left[s] + dx * g.dilation;
            const bool inside = row >= 0 && row < g.h && col >= 0 && col < g.w;
            v[s] = inside ? to_float(in[s][row * g.w + col]) : 0.f;
          }
          if constexpr (kCout >= 4) {
            const float4* w4 = reinterpret_cast<const float4*>(tap_weights);
#pragma unroll
            for (int k = 0; k < kCout / 4; ++k) {
              const float4 wv = w4[k];
#pragma unroll
              for (int s = 0; s < kPixels; ++s) {
                acc[s][4 * k] += v[s] * wv.x;
                acc[s][4 * k + 1] += v[s] * wv.y;
                acc[s][4 * k + 2] += v[s] * wv.z;
                acc[s][4 * k + 3] += v[s] * wv.w;
              }
            }
          } else {
#pragma unroll
            for (int o = 0; o < kCout; ++o)
#pragma unroll
              for (int s = 0; s < kPixels; ++s) acc[s][o] += v[s] * tap_weights[o];
          }
        }
      }
#pragma unroll
      for (int s = 0; s < kPixels; ++s) in[s] += in_plane;
    }

#pragma unroll
    for (int s = 0; s < kPixels; ++s) {
      if (!stored[s]) continue;
#pragma unroll
      for (int o = 0; o < kCout; ++o) {
        if (o < g.cout) {
          float v = bias ? acc[s][o] + to_float(bias[o]) : acc[s][o];
          if constexpr (kRelu) v = v > 0.f ? v : 0.f;  // NaN > 0 is false: NaN becomes 0, as relu_forward
          out[s][int64_t{o} * out_plane] = from_float<T>(v);
        }
      }
    }
  }
}

// Blocks of kThreads threads of `kernel` resident on one SM at once (at least 1).
template <class Kernel> int resident_blocks(Kernel kernel, size_t shared) {
  int blocks = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, shared));
  return std::max(blocks, 1);
}

template <int kCout, class T>
void launch(const Geometry& g, const T* x, const T* w, const T* b, T* y, bool relu) {
  constexpr int kPixels = pixels_per_thread<kCout>();
  const int64_t groups = (g.n * g.ho * g.wo + kPixels - 1) / kPixels;
  const size_t shared = static_cast<size_t>(g.cin * g.kh * g.kw) * kCout * sizeof(float);
  const auto kernel = relu ? direct_conv_kernel<kCout, true, T> : direct_conv_kernel<kCout, false, T>;
  // One wave of resident blocks: the grid-stride loop gives each several
  // groups, and every block copies the filter bank once. Asked once per
  // kernel, for the largest bank (2 x kDirectConvMacs floats after rounding
  // the outputs up to kCout, 16 KB): registers bound these kernels long before
  // shared memory does, so the answer holds for every bank.
  constexpr size_t kLargestBank = 2 * kDirectConvMacs * sizeof(float);
  static const int resident[2] = {
      resident_blocks(direct_conv_kernel<kCout, false, T>, kLargestBank),
      resident_blocks(direct_conv_kernel<kCout, true, T>, kLargestBank)};
  const int64_t wave = int64_t{std::max(context().sm_count, 1)} * resident[relu ? 1 : 0];
  const auto blocks = static_cast<unsigned>(std::clamp<int64_t>((groups + kThreads - 1) / kThreads, 1, wave));
  kernel<<<blocks, kThreads, shared, context().stream>>>(x, w, b, y, g);
}

// -1: as the environment says; 0 / 1: set_direct_conv.
std::atomic<int> forced{-1};

bool enabled() {
  static const bool from_environment = [] {
    const char* v = std::getenv("COVIDRATE_DIRECT_CONV");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  const int f = forced.load(std::memory_order_relaxed);
  return f < 0 ? from_environment : f == 1;
}

}  // namespace

void set_direct_conv(std::optional<bool> on) { forced = on ? int{*on} : -1; }

bool direct_conv_applies(const Tensor& x, const Tensor& w, const ConvParams& p) {
  const int64_t macs = w.c() * w.h() * w.w() * w.n();
  const int64_t plane_limit = int64_t{1} << 30;  // int indices within a plane, with room for padding
  const Shape ys = conv2d_out_shape(x.shape(), w.shape(), p);
  const int small = 1 << 16;  // window corners (i * stride - pad + dy * dilation) stay far inside int
  return enabled() && w.n() <= 64 && macs <= kDirectConvMacs && x.h() * x.w() < plane_limit &&
         ys.h() * ys.w() < plane_limit && p.pad < small && p.stride < small && p.dilation < small &&
         x.h() < small && x.w() < small;
}

void direct_conv_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const ConvParams& p, Tensor& y) {
  const auto i32 = [](int64_t v) { return static_cast<int>(v); };  // bounded by direct_conv_applies
  const Geometry g{x.n(),          i32(x.c()),  i32(x.h()), i32(x.w()), i32(y.c()), i32(y.h()),
                   i32(y.w()),     i32(w.h()),  i32(w.w()), p.stride,   p.pad,       p.dilation};
  if (g.n * g.ho * g.wo == 0) return;
  with_element_type(x, [&]<class T>() {
    const T* in = elements<T>(x);
    const T* k = elements<T>(w);
    const T* b = bias ? elements<T>(*bias) : nullptr;
    T* out = elements<T>(y);
    // The register tile: the next power of two >= the output channels.
    if (g.cout <= 1) {
      launch<1>(g, in, k, b, out, p.relu);
    } else if (g.cout <= 2) {
      launch<2>(g, in, k, b, out, p.relu);
    } else if (g.cout <= 4) {
      launch<4>(g, in, k, b, out, p.relu);
    } else if (g.cout <= 8) {
      launch<8>(g, in, k, b, out, p.relu);
    } else if (g.cout <= 16) {
      launch<16>(g, in, k, b, out, p.relu);
    } else if (g.cout <= 32) {
      launch<32>(g, in, k, b, out, p.relu);
    } else {
      launch<64>(g, in, k, b, out, p.relu);
    }
  });
  CUDA_CHECK_LAUNCH("direct_conv_kernel");
}

}  // namespace covidrate::cuda
