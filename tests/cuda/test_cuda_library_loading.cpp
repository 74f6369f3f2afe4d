// cuBLAS is opened on first use, not linked (kernels/cuda/cublas_api.h): a
// process that never makes a CUDA context never loads it. Runs with or
// without a GPU, since it checks the loader, not the device.
// gpu_check: CPU only (every CUDA test there opens cuBLAS through its context).
#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "kernels/cuda/cublas_api.h"
#include "nn/device.h"

using namespace covidrate;

namespace {

bool mapped(const std::string& library) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);)
    if (line.find(library) != std::string::npos) return true;
  return false;
}

}  // namespace

TEST_CASE("cuBLAS is loaded when first asked for, and every call it is asked for resolves") {
  // Asking whether a GPU is there is not asking for cuBLAS.
  (void)cuda_available();
  CHECK_FALSE(mapped("libcublas"));
  CHECK_FALSE(mapped("libcublasLt"));

  const std::string name = cuda::cublas_library_name();
  CHECK(name == "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR));
  const cuda::CublasApi& api = cuda::cublas();
  CHECK(mapped("libcublas.so"));
  for (const void* call : {reinterpret_cast<const void*>(api.create), reinterpret_cast<const void*>(api.set_stream),
                           reinterpret_cast<const void*>(api.set_math_mode), reinterpret_cast<const void*>(api.sgemm),
                           reinterpret_cast<const void*>(api.gemm_ex),
                           reinterpret_cast<const void*>(api.status_string)})
    CHECK(call != nullptr);
  // A call through the table reaches the library (it needs no device).
  const std::string message = api.status_string(CUBLAS_STATUS_NOT_INITIALIZED);
  CHECK(message.find("not initialized") != std::string::npos);  // "the library was not initialized"
  CHECK(&cuda::cublas() == &api);  // opened once
}
