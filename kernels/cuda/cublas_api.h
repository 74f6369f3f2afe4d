// cuBLAS, opened on first use instead of linked. Linking it loads libcublasLt
// (541 MB) with the program, whose start-up then costs every process of a
// CUDA build 210 MB of resident memory and 70 ms (measured on an empty
// program), also those that never touch a GPU: the CPU path on a machine
// without one, `--help`, every test of the CI machine. The context opens it
// when it creates its handle (kernels/cuda/context.cpp), the first time a
// process uses a GPU. Only these calls are used; add one here to use it.
// Only compiled when COVIDRATE_HAVE_CUDA.
#pragma once
#include <cublas_v2.h>

namespace covidrate::cuda {

// cublasGemmEx is overloaded in C++ (an inline wrapper for the old cudaDataType
// compute type); this is the exported one.
using CublasGemmEx = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                        const void*, const void*, cudaDataType, int, const void*, cudaDataType, int,
                                        const void*, void*, cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);

struct CublasApi {
  decltype(&cublasCreate_v2) create;
  decltype(&cublasSetStream_v2) set_stream;
  decltype(&cublasSetMathMode) set_math_mode;
  decltype(&cublasSgemm_v2) sgemm;
  CublasGemmEx gemm_ex;
  decltype(&cublasGetStatusString) status_string;
};

// The library this build was compiled against, by its soname.
const char* cublas_library_name();
// Opens it once (thread-safe) and resolves every call above. Throws
// covidrate::Error naming the library, the symbol and the loader's message
// when it cannot (not installed, not on the library path, too old).
const CublasApi& cublas();

}  // namespace covidrate::cuda
