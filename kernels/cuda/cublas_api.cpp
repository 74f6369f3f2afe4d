#include "kernels/cuda/cublas_api.h"

#include <dlfcn.h>

#include <string>

#include "nn/error.h"

namespace covidrate::cuda {

namespace {

#define CR_STRINGIFY_INNER(x) #x
#define CR_STRINGIFY(x) CR_STRINGIFY_INNER(x)
constexpr const char* kLibrary = "libcublas.so." CR_STRINGIFY(CUBLAS_VER_MAJOR);

template <class Fn> void resolve(void* library, const char* symbol, Fn& out) {
  dlerror();  // clear
  void* address = dlsym(library, symbol);
  const char* error = dlerror();
  CR_CHECK(address != nullptr && error == nullptr,
           "cuBLAS: " << kLibrary << " has no " << symbol << " (" << (error ? error : "null") << ")");
  out = reinterpret_cast<Fn>(address);
}

CublasApi open_cublas() {
  // Never closed: handles made from it live until the process ends.
  void* library = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    const char* error = dlerror();
    CR_FAIL("cuBLAS: cannot load " << kLibrary << " (" << (error ? error : "unknown error")
                                   << "): install the CUDA toolkit's cuBLAS or put its folder on LD_LIBRARY_PATH");
  }
  CublasApi api{};
  resolve(library, "cublasCreate_v2", api.create);
  resolve(library, "cublasSetStream_v2", api.set_stream);
  resolve(library, "cublasSetMathMode", api.set_math_mode);
  resolve(library, "cublasSgemm_v2", api.sgemm);
  resolve(library, "cublasGemmEx", api.gemm_ex);
  resolve(library, "cublasGetStatusString", api.status_string);
  return api;
}

}  // namespace

const char* cublas_library_name() { return kLibrary; }

const CublasApi& cublas() {
  static const CublasApi api = open_cublas();  // a failure throws; the next call tries again
  return api;
}

}  // namespace covidrate::cuda
