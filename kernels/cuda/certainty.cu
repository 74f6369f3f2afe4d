// The certainty index per image (kernels/cpu/certainty.cpp says what it is
// for): one row_partials pass, a row per image, each block summing the
// probabilities above the cut-off and counting them in double; row_finish then
// adds a row's block partials in a fixed order and divides. Memory-bound: one
// read of the batch's probabilities, N floats written.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/row_kernels.cuh"

namespace covidrate::cuda {

namespace {

struct AboveCutoff {  // acc = {sum of p above the cut-off, how many}
  float cutoff;  // in the data's precision, as the CPU twin compares
  __device__ void operator()(int64_t, const float (&v)[1], double (&acc)[2]) const {
    if (v[0] > cutoff) {  // NaN is never above: not counted
      acc[0] += v[0];
      acc[1] += 1.0;
    }
  }
};

struct StoreIndex {
  float* ci;
  __device__ void operator()(int64_t row, const double (&sums)[2]) const {
    ci[row] = static_cast<float>(sums[1] > 0 ? sums[0] / sums[1] : 0.0);
  }
};

}  // namespace

void certainty_index(const Tensor& p, double cutoff, Tensor& ci) {
  const int64_t images = p.shape()[0];
  const Inputs<1> in{{p.data<float>()}};
  const Partials partials =
      row_partials<2>(RowLayout{images, 1, 0, p.numel() / images}, in, AboveCutoff{static_cast<float>(cutoff)});
  row_finish<2>(partials, StoreIndex{ci.data<float>()});
}

}  // namespace covidrate::cuda
