// What the CPU convolutions (conv2d.cpp, conv2d_winograd.cpp) share: the
// OpenBLAS gemm for float and double, and the per-thread scratch buffer.
#pragma once
#include <cblas.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace covidrate::cpu {

// Row-major C = alpha * op(A) * op(B) + beta * C, op = transpose when asked.
inline void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                 int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}
inline void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                 const double* a, int64_t lda, const double* b, int64_t ldb, double beta, double* c,
                 int64_t ldc) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

// Scratch space of the calling thread, one buffer for all convolutions: grown
// on demand, kept between calls, so steady-state training allocates nothing.
// The contents are undefined; the pointer is valid until the next call.
template <class T> T* scratch_buffer(size_t count) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < count) {
    buffer = std::vector<T>();  // release the old one first: peak memory stays one buffer
    buffer.resize(count);
  }
  return buffer.data();
}

}  // namespace covidrate::cpu
