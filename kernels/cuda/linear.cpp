// Fully connected layers (no bias) through cuBLAS sgemm; the bf16 forward
// through cublasGemmEx with bf16 matrices and float32 compute (accumulation).
//
// Row-major versus column-major: cuBLAS reads matrices column-major. A
// row-major [R, C] buffer read column-major is the [C, R] matrix, its
// transpose, with leading dimension C. So every product below is written for
// the transposes, using (AB)^T = B^T A^T, and no data is ever moved:
//   x  [N, In]   row-major  ==  x^T  [In, N]   column-major, ld In
//   w  [Out, In] row-major  ==  w^T  [In, Out] column-major, ld In
//   y  [N, Out]  row-major  ==  y^T  [Out, N]  column-major, ld Out
#include <algorithm>
#include <climits>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_ops.h"

namespace covidrate::cuda {

namespace {

int gemm_dim(int64_t v, const char* op, const char* what, const Tensor& t) {
  CR_CHECK(v <= INT_MAX, op << ": " << what << " of " << t.str() << " exceeds cuBLAS's 32-bit sizes");
  return static_cast<int>(v);
}

// C = alpha * op(A) op(B) + beta * C, column-major, on the context stream.
void sgemm(const char* op, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
           const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  if (m == 0 || n == 0) return;
  Context& ctx = context();
  // TF32 is decided per call so that flipping context().allow_tf32 takes
  // effect at once. CUBLAS_DEFAULT_MATH keeps sgemm in full float32.
  CUBLAS_CHECK(cublas().set_math_mode(ctx.cublas, ctx.allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  const float alpha = 1.0f;
  // cuBLAS rejects a leading dimension of 0 even when k == 0 makes it unused.
  lda = std::max(lda, 1);
  ldb = std::max(ldb, 1);
  const cublasStatus_t st = cublas().sgemm(ctx.cublas, ta, tb, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc);
  CR_CHECK(st == CUBLAS_STATUS_SUCCESS,
           "cuBLAS error: cublasSgemm for " << op << " (m " << m << ", n " << n << ", k " << k
                                            << ", transa " << (ta == CUBLAS_OP_T ? "T" : "N") << ", transb "
                                            << (tb == CUBLAS_OP_T ? "T" : "N") << ", beta " << beta
                                            << ") failed: " << cublas().status_string(st));
}

// C = op(A) op(B), column-major, all three bf16, products summed in float32.
void bf16_gemm(const char* op, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
               const void* a, int lda, const void* b, int ldb, void* c, int ldc) {
  if (m == 0 || n == 0) return;
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t st =
      cublas().gemm_ex(context().cublas, ta, tb, m, n, k, &alpha, a, CUDA_R_16BF, std::max(lda, 1), b, CUDA_R_16BF,
                   std::max(ldb, 1), &beta, c, CUDA_R_16BF, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  CR_CHECK(st == CUBLAS_STATUS_SUCCESS, "cuBLAS error: cublasGemmEx (bf16) for " << op << " (m " << m << ", n "
                                                                                 << n << ", k " << k
                                                                                 << ") failed: "
                                                                                 << cublas().status_string(st));
}

}  // namespace

// y^T [Out, N] = (w^T)^T [Out, In] * x^T [In, N]
void linear_forward(const Tensor& x, const Tensor& w, Tensor& y) {
  const char* op = "linear_forward";
  const int n = gemm_dim(x.n(), op, "batch", x);
  const int in = gemm_dim(w.c(), op, "features", w);
  const int out = gemm_dim(w.n(), op, "outputs", w);
  if (x.dtype() == DType::BF16)
    return bf16_gemm(op, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, w.raw(), in, x.raw(), in, y.raw(), out);
  sgemm(op, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, w.data<float>(), in, x.data<float>(), in, 0.0f,
        y.data<float>(), out);
}

// dx = dy w:   dx^T [In, N] = w^T [In, Out] * dy^T [Out, N]
void linear_backward_data(const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate) {
  const char* op = "linear_backward_data";
  const int n = gemm_dim(dy.n(), op, "batch", dy);
  const int out = gemm_dim(w.n(), op, "outputs", w);
  const int in = gemm_dim(w.c(), op, "features", w);
  sgemm(op, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, w.data<float>(), in, dy.data<float>(), out,
        accumulate ? 1.0f : 0.0f, dx.data<float>(), in);
}

// dw += dy^T x:   dw^T [In, Out] += x^T [In, N] * (dy^T)^T [N, Out]
void linear_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw) {
  const char* op = "linear_backward_weight";
  const int n = gemm_dim(x.n(), op, "batch", x);
  const int in = gemm_dim(dw.c(), op, "features", dw);
  const int out = gemm_dim(dw.n(), op, "outputs", dw);
  sgemm(op, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, x.data<float>(), in, dy.data<float>(), out, 1.0f,
        dw.data<float>(), in);
}

}  // namespace covidrate::cuda
