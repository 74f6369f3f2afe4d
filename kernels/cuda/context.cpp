// The per-device CUDA context: one stream that every kernel, copy and library
// call of the engine is ordered on, the cuBLAS and cuDNN handles bound to that
// stream, device facts kernels size themselves by, the TF32 switch, and one
// grow-only workspace for library calls.
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/runtime.h"

namespace covidrate::cuda {

void throw_cuda_error(const char* call, const char* file, int line, const char* what) {
  // Strip the build-machine prefix so messages read the same everywhere.
  const char* slash = std::strstr(file, "kernels/");
  std::ostringstream os;
  os << "CUDA error: " << call << " failed at " << (slash ? slash : file) << ":" << line << ": "
     << what;
  // The error is reported now, by this exception: clear it, or the next
  // kernel's launch check would report it again as its own. A faulting kernel
  // is different: its error sticks, is reported by whatever call comes next
  // (often a copy or a synchronize), and every call after it fails the same way.
  const cudaError_t last = cudaGetLastError();
  if (last == cudaErrorIllegalAddress || last == cudaErrorMisalignedAddress ||
      last == cudaErrorLaunchFailure || last == cudaErrorIllegalInstruction ||
      last == cudaErrorHardwareStackError || last == cudaErrorAssert)
    os << " (a kernel queued earlier may be the culprit: rerun with CUDA_LAUNCH_BLOCKING=1 or under "
          "compute-sanitizer to find it)";
  throw Error(os.str());
}

namespace {

// TF32 rounds convolution and GEMM inputs to a 10-bit mantissa: faster on
// tensor cores, but results drift 1e-4..1e-3 from float32. Off unless asked
// for, so that CPU/GPU parity stays tight and training matches the CPU reference.
bool tf32_from_env() {
  const char* v = std::getenv("COVIDRATE_TF32");
  return v && std::strcmp(v, "1") == 0;
}

struct DeviceState {
  Context ctx;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

std::unique_ptr<DeviceState> create_state(int device) {
  auto s = std::make_unique<DeviceState>();
  Context& c = s->ctx;
  c.device = device;
  // A blocking stream (not cudaStreamNonBlocking) also orders itself against
  // the legacy default stream, so a stray cudaMemcpy elsewhere cannot race it.
  CUDA_CHECK(cudaStreamCreate(&c.stream));
  CUBLAS_CHECK(cublas().create(&c.cublas));  // opens the library (cublas_api.h)
  CUBLAS_CHECK(cublas().set_stream(c.cublas, c.stream));
  CUDNN_CHECK(cudnnCreate(&c.cudnn));
  CUDNN_CHECK(cudnnSetStream(c.cudnn, c.stream));
  CUDA_CHECK(cudaDeviceGetAttribute(&c.sm_count, cudaDevAttrMultiProcessorCount, device));
  int l2 = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
  c.l2_bytes = static_cast<size_t>(l2);
  c.allow_tf32 = tf32_from_env();
  return s;
}

// Contexts are created once per device and never destroyed: destroying
// handles from a static destructor races the CUDA runtime's own teardown at
// process exit, and the driver frees everything when the process ends.
DeviceState& state() {
  static std::mutex mu;
  static std::vector<DeviceState*> states;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mu);
  if (static_cast<size_t>(device) >= states.size()) states.resize(device + 1, nullptr);
  if (!states[device]) states[device] = create_state(device).release();
  return *states[device];
}

}  // namespace

Context& context() { return state().ctx; }

void* workspace(size_t bytes) {
  DeviceState& s = state();
  if (bytes > s.workspace_bytes) {
    Allocator& alloc = device_allocator();
    // Freeing is stream-ordered (the caching allocator reuses blocks only for
    // work queued later on the same stream), so no synchronization is needed.
    if (s.workspace) alloc.deallocate(s.workspace, s.workspace_bytes);
    s.workspace = nullptr;
    s.workspace_bytes = 0;
    s.workspace = alloc.allocate(bytes);
    s.workspace_bytes = bytes;
  }
  return s.workspace;
}

}  // namespace covidrate::cuda
