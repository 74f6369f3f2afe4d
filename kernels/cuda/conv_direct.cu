// Direct convolution for tiny filter banks (see conv_direct.h for when and why).
// Parallel strategy: a 1-D grid-stride loop over output pixels (n, i, j); one
// thread owns one pixel and keeps all kCout output channels in registers. The
// block first copies the filter bank into shared memory as [tap][kCout] floats
// (tap = (c, dy, dx); zeros beyond the real output count), so the inner loop
// reads each tap's weights as a broadcast (every thread of a warp reads the
// same address). Input reads are coalesced along j (every s-th element at
// stride s) and neighbouring pixels' taps overlap in L1.
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

// Sizes of one image fit in int (a plane is at most 2^31 elements, checked
// before the launch); offsets that include the image index are int64.
struct Geometry {
  int64_t n;
  int cin, h, w;    // input
  int cout, ho, wo;  // output
  int kh, kw, stride, pad, dilation;
};

template <int kCout, bool kRelu, class T>
__global__ void __launch_bounds__(kThreads)
    direct_conv_kernel(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                       T* __restrict__ y, Geometry g) {
  extern __shared__ float bank[];  // [taps][kCout]
  const int taps = g.cin * g.kh * g.kw;
  for (int e = threadIdx.x; e < taps * kCout; e += blockDim.x) {
    const int tap = e / kCout, o = e % kCout;
    bank[e] = o < g.cout ? to_float(weight[int64_t{o} * taps + tap]) : 0.f;
  }
  __syncthreads();

  const int out_plane = g.ho * g.wo, in_plane = g.h * g.w;
  const int64_t total = g.n * out_plane;
  for (int64_t p = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; p < total;
       p += int64_t{gridDim.x} * blockDim.x) {
    const int64_t image = p / out_plane;
    const int pixel = static_cast<int>(p - image * out_plane);
    const int i = pixel / g.wo, j = pixel - i * g.wo;
    const int top = i * g.stride - g.pad, left = j * g.stride - g.pad;
    const T* in = x + image * g.cin * in_plane;

    float acc[kCout];
#pragma unroll
    for (int o = 0; o < kCout; ++o) acc[o] = 0.f;
    const float* tap_weights = bank;
    for (int c = 0; c < g.cin; ++c, in += in_plane) {
      for (int dy = 0; dy < g.kh; ++dy) {
        const int row = top + dy * g.dilation;
        const bool row_inside = row >= 0 && row < g.h;
        for (int dx = 0; dx < g.kw; ++dx, tap_weights += kCout) {
          const int col = left + dx * g.dilation;
          const float v = row_inside && col >= 0 && col < g.w ? to_float(in[row * g.w + col]) : 0.f;
#pragma unroll
          for (int o = 0; o < kCout; ++o) acc[o] += v * tap_weights[o];
        }
      }
    }

    T* out = y + image * g.cout * out_plane + pixel;
#pragma unroll
    for (int o = 0; o < kCout; ++o) {
      if (o < g.cout) {
        float v = bias ? acc[o] + to_float(bias[o]) : acc[o];
        if constexpr (kRelu) v = v > 0.f ? v : 0.f;  // NaN > 0 is false: NaN becomes 0, as relu_forward
        out[int64_t{o} * out_plane] = from_float<T>(v);
      }
    }
  }
}

template <int kCout, class T>
void launch(const Geometry& g, const T* x, const T* w, const T* b, T* y, bool relu) {
  const int64_t total = g.n * g.ho * g.wo;
  const int64_t wanted = (total + kThreads - 1) / kThreads;
  // Enough blocks to fill the GPU several times over; beyond that the
  // grid-stride loop saves copying the filter bank again per block.
  const int64_t cap = int64_t{std::max(context().sm_count, 1)} * 16;
  const auto blocks = static_cast<unsigned>(std::max<int64_t>(1, std::min(wanted, cap)));
  const size_t shared = static_cast<size_t>(g.cin * g.kh * g.kw) * kCout * sizeof(float);
  const cudaStream_t s = context().stream;
  if (relu) {
    direct_conv_kernel<kCout, true><<<blocks, kThreads, shared, s>>>(x, w, b, y, g);
  } else {
    direct_conv_kernel<kCout, false><<<blocks, kThreads, shared, s>>>(x, w, b, y, g);
  }
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

bool direct_conv_applies(const Tensor& x, const Tensor& w, const ConvParams&) {
  const int64_t macs = w.c() * w.h() * w.w() * w.n();
  const int64_t plane_limit = int64_t{1} << 30;  // int indices within an image, with room for padding
  return enabled() && w.n() <= 64 && macs <= kDirectConvMacs && x.c() == w.c() && x.h() * x.w() < plane_limit;
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
