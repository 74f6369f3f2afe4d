// Shared by every CUDA twin: error checks that name the failing call, the
// per-device context (stream, cuBLAS and cuDNN handles, workspace; cuBLAS's
// calls through cublas_api.h), and launch
// helpers. Implemented in kernels/cuda/context.cpp. Only compiled when
// COVIDRATE_HAVE_CUDA.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/cublas_api.h"
#include "nn/error.h"

namespace covidrate::cuda {

[[noreturn]] void throw_cuda_error(const char* call, const char* file, int line, const char* what);

}  // namespace covidrate::cuda

// CUDA_CHECK(cudaMemcpy(...)): throws covidrate::Error naming the call, file, line and CUDA's message.
#define CUDA_CHECK(call)                                                              \
  do {                                                                                \
    cudaError_t cr_err_ = (call);                                                     \
    if (cr_err_ != cudaSuccess)                                                       \
      ::covidrate::cuda::throw_cuda_error(#call, __FILE__, __LINE__, cudaGetErrorString(cr_err_)); \
  } while (0)
// After every kernel launch: catches bad launch configurations at once.
#define CUDA_CHECK_LAUNCH(name) CUDA_CHECK(cudaGetLastError())
#define CUBLAS_CHECK(call)                                                            \
  do {                                                                                \
    cublasStatus_t cr_st_ = (call);                                                   \
    if (cr_st_ != CUBLAS_STATUS_SUCCESS)                                              \
      ::covidrate::cuda::throw_cuda_error(#call, __FILE__, __LINE__,                  \
                                          ::covidrate::cuda::cublas().status_string(cr_st_)); \
  } while (0)
#define CUDNN_CHECK(call)                                                             \
  do {                                                                                \
    cudnnStatus_t cr_st_ = (call);                                                    \
    if (cr_st_ != CUDNN_STATUS_SUCCESS)                                               \
      ::covidrate::cuda::throw_cuda_error(#call, __FILE__, __LINE__, cudnnGetErrorString(cr_st_)); \
  } while (0)

namespace covidrate::cuda {

// The context of the current device, created on first use.
struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;  // every kernel and library call runs on this stream
  cublasHandle_t cublas = nullptr;
  cudnnHandle_t cudnn = nullptr;
  int sm_count = 0;
  size_t l2_bytes = 0;
  bool allow_tf32 = false;  // COVIDRATE_TF32=1 turns it on (convolutions, cuBLAS)
};
Context& context();

// A grow-only device buffer for library workspaces (cuDNN, cuBLAS), one per
// context. Valid until the next call of workspace(). Callers run on the
// context stream, so reuse is ordered.
void* workspace(size_t bytes);

// Blocks of `threads` covering n elements, capped to a grid-stride-friendly size.
inline unsigned grid_for(int64_t n, unsigned threads = 256) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > 65535LL * 32) blocks = 65535LL * 32;
  return static_cast<unsigned>(blocks);
}

}  // namespace covidrate::cuda
