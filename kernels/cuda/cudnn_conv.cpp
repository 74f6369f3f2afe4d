// Every cuDNN call of the engine: the three convolution directions and the
// bias, through cuDNN's legacy cudnnConvolution* API (still in cuDNN 9).
//
// Per distinct shape (ConvKey) a plan holds the descriptors and, per direction,
// the algorithm cudnnFind*Ex measured fastest among the DETERMINISTIC ones, so
// that running the same step twice gives bit-identical results. The search runs
// once per shape and direction; later calls are a hash lookup plus the cuDNN
// call. (COVIDRATE_CUDNN_SEARCH=heuristic ranks by cuDNN's prediction instead.)
//
// Math mode: with TF32 off (the default, COVIDRATE_TF32 unset) the descriptors
// say CUDNN_FMA_MATH, which restricts cuDNN to plain float32 FMA kernels; with
// TF32 on they say CUDNN_DEFAULT_MATH, which lets Hopper use TF32 tensor cores.
// (CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION would also allow converting to FP16,
// which is more than TF32 promises.)
//
// bf16 (forward only, for inference): tensors and filters are
// CUDNN_DATA_BFLOAT16, the convolution's compute type stays CUDNN_DATA_FLOAT
// (products summed in float32), and the math mode is CUDNN_TENSOR_OP_MATH:
// cuDNN's legacy API runs tensor-core kernels only when the descriptor says
// TENSOR_OP_MATH (or _ALLOW_CONVERSION), and tensor cores are what bf16 is
// for. (PyTorch sets the same for its bf16 convolutions.) The TF32 flag does
// not apply to bf16 plans. The bias is added by our own kernel
// (conv_bias.cu), after cuDNN has stored the convolution rounded to bf16.
//
// Measured choices outlive the process: each search's winner goes to a file
// per GPU model and cuDNN version (kernels/algorithm_cache.h; by default
// ~/.cache/covidrate/, COVIDRATE_CUDNN_CACHE=off or another path), and a
// later process takes it from there instead of timing every algorithm again.
// A remembered choice is used only if cuDNN still accepts it for the shape and
// its workspace fits today's budget; one that fails at the call is forgotten
// and searched again. The heuristic mode neither reads nor writes the file.
//
// Tiny filter banks (the stem, the head, the small 1x1s) never get here: their
// forward runs in our own kernel (conv_direct.h), where cuDNN measured slow.
#include "kernels/cuda/cudnn_conv.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/algorithm_cache.h"
#include "kernels/cuda/conv_bias.h"
#include "kernels/cuda/conv_direct.h"
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"

namespace covidrate::cuda {

namespace {

struct ConvKey {
  int device = 0;
  int n = 0, c = 0, h = 0, w = 0;  // input
  int k = 0, kh = 0, kw = 0;       // output channels, kernel size
  int stride = 1, pad = 0, dilation = 1;
  // Largest power of two (up to 16) dividing every data pointer of the call:
  // some cuDNN kernels use vector loads, so an algorithm found on aligned
  // buffers may be illegal for a view that starts mid-allocation.
  int alignment = 16;
  bool tf32 = false;
  bool bf16 = false;  // bf16 tensors and filters (float compute); else float32
  bool operator==(const ConvKey&) const = default;

  // TF32 for float32 when asked, always for bf16; plain FMA kernels otherwise.
  bool tensor_cores() const { return tf32 || bf16; }
  // The math mode the descriptor offers the algorithm search (see the header comment).
  cudnnMathType_t search_math() const {
    return bf16 ? CUDNN_TENSOR_OP_MATH : tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
  }
  cudnnDataType_t data_type() const { return bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT; }

  std::string str() const {
    std::ostringstream os;
    os << "x [" << n << ", " << c << ", " << h << ", " << w << "], w [" << k << ", " << c << ", "
       << kh << ", " << kw << "], stride " << stride << ", pad " << pad << ", dilation " << dilation
       << ", alignment " << alignment << ", " << (bf16 ? "bf16" : tf32 ? "f32, tf32 on" : "f32, tf32 off");
    return os.str();
  }
};

struct ConvKeyHash {
  size_t operator()(const ConvKey& k) const {
    size_t h = 0;
    for (int v : {k.device, k.n, k.c, k.h, k.w, k.k, k.kh, k.kw, k.stride, k.pad, k.dilation,
                  k.alignment, static_cast<int>(k.tf32), static_cast<int>(k.bf16)})
      h = h * 1000003u ^ std::hash<int>()(v);
    return h;
  }
};

enum Direction { kForward = 0, kBackwardData = 1, kBackwardFilter = 2 };
const char* const kDirectionName[] = {"forward", "backward data", "backward filter"};

struct Choice {
  bool chosen = false;
  int algo = 0;  // cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t
  cudnnMathType_t math = CUDNN_FMA_MATH;
  size_t workspace_bytes = 0;
  float ms = 0;            // what the search measured (0 for a heuristic choice)
  bool from_file = false;  // taken from the algorithm cache file, not searched in this process
};

struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  Choice choice[3];

  ConvPlan() = default;
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;
  ~ConvPlan() {  // status ignored: nothing sensible to do about a failed destroy
    if (x) cudnnDestroyTensorDescriptor(x);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (bias) cudnnDestroyTensorDescriptor(bias);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
  }
};

// All plans, and the counters tests read. Never destroyed (see context.cpp).
struct PlanCache {
  std::mutex mu;
  std::unordered_map<ConvKey, std::unique_ptr<ConvPlan>, ConvKeyHash> plans;
  ConvPlanStats stats;
  // The algorithm cache file per device ordinal (null: none), opened on first use.
  std::unordered_map<int, std::unique_ptr<AlgorithmCacheFile>> files;
  std::optional<std::string> file_path;  // set_algorithm_cache_path: instead of the environment's
};
PlanCache& cache() {
  static PlanCache* c = new PlanCache;
  return *c;
}

// A failing cuDNN call names itself, cuDNN's status and the convolution's shapes.
#define CONV_CHECK(call, key)                                                                     \
  do {                                                                                            \
    cudnnStatus_t st_ = (call);                                                                   \
    if (st_ != CUDNN_STATUS_SUCCESS)                                                              \
      CR_FAIL("cuDNN error: " << #call << " failed: " << cudnnGetErrorString(st_) << " (" \
                              << (key).str() << ")");                                             \
  } while (0)

int to_int(int64_t v, const char* what, const Shape& s) {
  CR_CHECK(v >= 0 && v <= INT_MAX,
           "conv2d (cuDNN): " << what << " of " << s.str() << " exceeds cuDNN's 32-bit limit");
  return static_cast<int>(v);
}

int alignment_of(std::initializer_list<const void*> ptrs) {
  uintptr_t bits = 16;
  for (const void* p : ptrs) bits |= reinterpret_cast<uintptr_t>(p);
  return static_cast<int>(bits & (~bits + 1));  // lowest set bit
}

ConvKey make_key(const Shape& x, const Shape& w, const ConvParams& p, DType dtype,
                 std::initializer_list<const void*> ptrs) {
  ConvKey k;
  CUDA_CHECK(cudaGetDevice(&k.device));
  k.n = to_int(x.n(), "batch", x);
  k.c = to_int(x.c(), "channels", x);
  k.h = to_int(x.h(), "height", x);
  k.w = to_int(x.w(), "width", x);
  k.k = to_int(w.n(), "output channels", w);
  k.kh = to_int(w.h(), "kernel height", w);
  k.kw = to_int(w.w(), "kernel width", w);
  // Legacy descriptors keep strides in int: whole tensors must fit, too.
  to_int(x.numel(), "element count", x);
  to_int(conv2d_out_shape(x, w, p).numel(), "output element count", conv2d_out_shape(x, w, p));
  CR_CHECK(k.c > 0 && k.h > 0 && k.w > 0 && k.k > 0 && k.kh > 0 && k.kw > 0,
           "conv2d (cuDNN): every dimension but the batch must be positive, got input "
               << x.str() << " and weight " << w.str());
  k.stride = p.stride;
  k.pad = p.pad;
  k.dilation = p.dilation;
  k.alignment = alignment_of(ptrs);
  k.bf16 = dtype == DType::BF16;
  k.tf32 = !k.bf16 && context().allow_tf32;
  return k;
}

std::unique_ptr<ConvPlan> build_plan(const ConvKey& k) {
  auto plan = std::make_unique<ConvPlan>();
  CONV_CHECK(cudnnCreateTensorDescriptor(&plan->x), k);
  CONV_CHECK(cudnnCreateTensorDescriptor(&plan->y), k);
  CONV_CHECK(cudnnCreateTensorDescriptor(&plan->bias), k);
  CONV_CHECK(cudnnCreateFilterDescriptor(&plan->w), k);
  CONV_CHECK(cudnnCreateConvolutionDescriptor(&plan->conv), k);
  CONV_CHECK(cudnnSetTensor4dDescriptor(plan->x, CUDNN_TENSOR_NCHW, k.data_type(), k.n, k.c, k.h, k.w), k);
  CONV_CHECK(cudnnSetFilter4dDescriptor(plan->w, k.data_type(), CUDNN_TENSOR_NCHW, k.k, k.c, k.kh, k.kw), k);
  // Cross-correlation, as PyTorch and Keras define "convolution"; float compute for both data types.
  CONV_CHECK(cudnnSetConvolution2dDescriptor(plan->conv, k.pad, k.pad, k.stride, k.stride, k.dilation,
                                             k.dilation, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
             k);
  CONV_CHECK(cudnnSetConvolutionMathType(plan->conv, k.search_math()), k);
  int on = 0, oc = 0, oh = 0, ow = 0;
  CONV_CHECK(cudnnGetConvolution2dForwardOutputDim(plan->conv, plan->x, plan->w, &on, &oc, &oh, &ow), k);
  CONV_CHECK(cudnnSetTensor4dDescriptor(plan->y, CUDNN_TENSOR_NCHW, k.data_type(), on, oc, oh, ow), k);
  CONV_CHECK(cudnnSetTensor4dDescriptor(plan->bias, CUDNN_TENSOR_NCHW, k.data_type(), 1, k.k, 1, 1), k);
  return plan;
}

// The plan of this shape, built on first use. Caller holds cache().mu.
ConvPlan& plan_for(const ConvKey& k) {
  PlanCache& c = cache();
  auto it = c.plans.find(k);
  if (it != c.plans.end()) {
    ++c.stats.hits;
    return *it->second;
  }
  auto plan = build_plan(k);
  ++c.stats.plans;
  return *c.plans.emplace(k, std::move(plan)).first->second;
}

// A scratch output for one algorithm search, from the caching allocator, with
// the same alignment class as the real output (cudaMalloc blocks are 256-byte
// aligned), so the search only keeps algorithms the real call can use.
class ScratchOutput {
 public:
  ScratchOutput(const void* like, size_t bytes)
      : bytes_(bytes + 256), base_(device_allocator().allocate(bytes_)) {
    ptr_ = static_cast<char*>(base_) + reinterpret_cast<uintptr_t>(like) % 256;
  }
  ~ScratchOutput() { device_allocator().deallocate(base_, bytes_); }
  ScratchOutput(const ScratchOutput&) = delete;
  ScratchOutput& operator=(const ScratchOutput&) = delete;
  void* get() const { return ptr_; }

 private:
  size_t bytes_;
  void* base_;
  void* ptr_;
};

// What an algorithm may ask for as workspace: half of the free memory, at most
// COVIDRATE_CUDNN_WORKSPACE_MB if set, else an eighth of the device's memory
// (at least 1 GiB). Measured on an H200, bf16 inference at batch 16 × 512²:
// the two full-resolution decoder convolutions ([16, 128, 512, 512] → 64)
// need 1536 MiB for their tensor-core algorithm (2.6 ms each); under the old
// fixed 1 GiB cap cuDNN fell back to one without workspace at 40 ms each, and
// the whole forward took 101 ms instead of 24 ms. The workspace is one
// grow-only buffer, so this memory is held once, not per shape.
size_t workspace_budget() {
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  static const size_t cap = [total_b] {
    const char* v = std::getenv("COVIDRATE_CUDNN_WORKSPACE_MB");
    if (!v || !*v) return std::max<size_t>(total_b / 8, size_t{1} << 30);
    char* end = nullptr;
    const long mb = std::strtol(v, &end, 10);
    CR_CHECK(mb >= 0 && end && *end == '\0',
             "COVIDRATE_CUDNN_WORKSPACE_MB must be a whole number of MiB >= 0, got '" << v << "'");
    return static_cast<size_t>(mb) << 20;
  }();
  return std::min<size_t>(free_b / 2, cap);
}

// COVIDRATE_CUDNN_LOG=1 prints every search's results and the choice to
// stderr: which algorithms cuDNN offered, their time and workspace, and why
// the faster ones were passed over. For tuning on a GPU machine.
bool log_searches() {
  static const bool on = [] {
    const char* v = std::getenv("COVIDRATE_CUDNN_LOG");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return on;
}

// The workspace offered to a measuring search, taken from cudaMalloc directly
// and returned right after, so that this one-off gigabyte does not stay cached
// in the allocator's bins. Halves the request until cudaMalloc agrees.
class SearchWorkspace {
 public:
  explicit SearchWorkspace(size_t budget) {
    for (bytes_ = budget; bytes_ >= (1u << 20); bytes_ /= 2) {
      if (cudaMalloc(&ptr_, bytes_) == cudaSuccess) return;
      (void)cudaGetLastError();  // clear the failed allocation, try half as much
    }
    ptr_ = nullptr;
    bytes_ = 0;  // the search then only considers algorithms without workspace
  }
  ~SearchWorkspace() {
    if (ptr_) cudaFree(ptr_);
  }
  SearchWorkspace(const SearchWorkspace&) = delete;
  SearchWorkspace& operator=(const SearchWorkspace&) = delete;
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// COVIDRATE_CUDNN_SEARCH=heuristic takes cuDNN's predicted ranking
// (cudnnGet*_v7) instead of timing every algorithm (cudnnFind*Ex): no start-up
// cost per shape and the same choice on every run, at some speed. The GPU
// check uses it under compute-sanitizer, where timing runs are very slow.
bool measure_algorithms() {
  static const bool measure = [] {
    const char* v = std::getenv("COVIDRATE_CUDNN_SEARCH");
    return !(v && std::strcmp(v, "heuristic") == 0);
  }();
  return measure;
}

// The algorithm cache file of a device, opened on first use: named and
// identified by the GPU's model, its compute capability and the cuDNN version
// loaded at run time. Null when the cache is off or choices are not measured
// (a heuristic ranking is not worth remembering). Caller holds cache().mu.
AlgorithmCacheFile* algorithm_file(int device) {
  PlanCache& c = cache();
  auto it = c.files.find(device);
  if (it != c.files.end()) return it->second.get();
  std::unique_ptr<AlgorithmCacheFile> file;
  if (measure_algorithms()) {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    const std::string gpu = file_name_part(prop.name);
    const std::string sm = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    const std::string version = std::to_string(cudnnGetVersion());
    const std::string path =
        c.file_path ? *c.file_path
                    : default_algorithm_cache_path("cudnn-" + gpu + "-sm" + sm + "-cudnn" + version + ".tsv");
    if (!path.empty())
      file = std::make_unique<AlgorithmCacheFile>(path, gpu + ", sm " + sm + ", cuDNN " + version);
  }
  return c.files.emplace(device, std::move(file)).first->second.get();
}

std::string file_key(const ConvKey& k, Direction dir) { return std::string(kDirectionName[dir]) + ", " + k.str(); }

// A choice read from the file, if cuDNN accepts it for this shape today: an
// algorithm of the direction, a math mode the key allows (as pick() would),
// and a workspace within the budget. Caller holds cache().mu.
std::optional<Choice> remembered_choice(ConvPlan& plan, const ConvKey& k, Direction dir, const AlgorithmRecord& r) {
  const auto math = static_cast<cudnnMathType_t>(r.math);
  const bool known_math = math == CUDNN_DEFAULT_MATH || math == CUDNN_TENSOR_OP_MATH ||
                          math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION || math == CUDNN_FMA_MATH;
  if (!known_math || (!k.tensor_cores() && math != CUDNN_FMA_MATH)) return std::nullopt;
  const int count[] = {CUDNN_CONVOLUTION_FWD_ALGO_COUNT, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                       CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT};
  if (r.algo < 0 || r.algo >= count[dir]) return std::nullopt;
  if (cudnnSetConvolutionMathType(plan.conv, math) != CUDNN_STATUS_SUCCESS) return std::nullopt;
  cudnnHandle_t h = context().cudnn;
  size_t need = 0;
  cudnnStatus_t st = CUDNN_STATUS_NOT_SUPPORTED;
  if (dir == kForward)
    st = cudnnGetConvolutionForwardWorkspaceSize(h, plan.x, plan.w, plan.conv, plan.y,
                                                 static_cast<cudnnConvolutionFwdAlgo_t>(r.algo), &need);
  else if (dir == kBackwardData)
    st = cudnnGetConvolutionBackwardDataWorkspaceSize(h, plan.w, plan.y, plan.conv, plan.x,
                                                      static_cast<cudnnConvolutionBwdDataAlgo_t>(r.algo), &need);
  else
    st = cudnnGetConvolutionBackwardFilterWorkspaceSize(h, plan.x, plan.y, plan.conv, plan.w,
                                                        static_cast<cudnnConvolutionBwdFilterAlgo_t>(r.algo), &need);
  Choice c;
  c.workspace_bytes = std::max<size_t>(need, r.workspace_bytes);
  if (st != CUDNN_STATUS_SUCCESS || c.workspace_bytes > workspace_budget()) return std::nullopt;
  c.chosen = true;
  c.algo = r.algo;
  c.math = math;
  c.ms = static_cast<float>(r.ms);
  c.from_file = true;
  return c;
}

// Picks the first usable result (cuDNN sorts them by measured or predicted
// time), or a near-tie of it that needs less workspace.
template <class Perf>
Choice pick(const std::vector<Perf>& perf, int returned, size_t max_workspace, const ConvKey& k,
            Direction dir) {
  const auto usable = [&](const Perf& r, bool need_deterministic) {
    if (r.status != CUDNN_STATUS_SUCCESS || r.memory > max_workspace) return false;
    if (need_deterministic && r.determinism != CUDNN_DETERMINISTIC) return false;
    // Float32 with TF32 off never runs a tensor-core algorithm, whatever cuDNN offers.
    if (!k.tensor_cores() && (r.mathType == CUDNN_TENSOR_OP_MATH ||
                    r.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
      return false;
    return true;
  };
  if (log_searches()) {
    std::fprintf(stderr, "cudnn %s %s, workspace budget %zu MiB:\n", kDirectionName[dir], k.str().c_str(),
                 max_workspace >> 20);
    for (int i = 0; i < returned; ++i)
      std::fprintf(stderr, "  algo %d: %s, %.3f ms, workspace %zu MiB, math %d, %s\n",
                   static_cast<int>(perf[i].algo), cudnnGetErrorString(perf[i].status),
                   static_cast<double>(perf[i].time), perf[i].memory >> 20, static_cast<int>(perf[i].mathType),
                   perf[i].determinism == CUDNN_DETERMINISTIC ? "deterministic" : "non-deterministic");
  }
  for (bool need_deterministic : {true, false}) {
    for (int first = 0; first < returned; ++first) {
      if (!usable(perf[first], need_deterministic)) continue;
      // cuDNN sorts by time; a measured near-tie (within 5%, about the noise
      // of one timing) goes to the algorithm with the least workspace, which
      // is memory held for the rest of the run.
      int i = first;
      for (int j = first + 1; j < returned && perf[first].time > 0; ++j)
        if (usable(perf[j], need_deterministic) && perf[j].time <= 1.05f * perf[first].time &&
            perf[j].memory < perf[i].memory)
          i = j;
      if (log_searches())
        std::fprintf(stderr, "  -> algo %d\n", static_cast<int>(perf[i].algo));
      if (!need_deterministic) {
        static bool warned = false;  // once per process is enough to explain irreproducible runs
        if (!warned)
          std::fprintf(stderr, "covidrate: cuDNN has no deterministic %s algorithm for %s; using %d\n",
                       kDirectionName[dir], k.str().c_str(), static_cast<int>(perf[i].algo));
        warned = true;
      }
      Choice c;
      c.chosen = true;
      c.algo = static_cast<int>(perf[i].algo);
      c.math = k.tensor_cores() ? perf[i].mathType : CUDNN_FMA_MATH;
      c.workspace_bytes = perf[i].memory;
      c.ms = perf[i].time;
      return c;
    }
  }
  std::ostringstream os;
  os << "conv2d (cuDNN): no " << kDirectionName[dir] << " algorithm works for " << k.str() << "; tried";
  for (int i = 0; i < returned; ++i)
    os << " algo " << static_cast<int>(perf[i].algo) << " (" << cudnnGetErrorString(perf[i].status) << ")";
  throw Error(os.str());
}

// The algorithm of one direction, chosen on first use: from the algorithm
// cache file when it holds a choice cuDNN accepts (and use_file), else by a
// search whose winner goes to the file. A measuring search runs the call's
// real inputs into a scratch output (the search writes its output, which must
// not clobber a gradient that accumulates). Caller holds cache().mu.
Choice& choose(ConvPlan& plan, const ConvKey& k, Direction dir, const void* in_a, const void* in_b,
               const void* out, size_t out_bytes, bool use_file = true) {
  Choice& c = plan.choice[dir];
  if (c.chosen) return c;
  AlgorithmCacheFile* file = algorithm_file(k.device);
  if (file && use_file)
    if (const std::optional<AlgorithmRecord> r = file->find(file_key(k, dir)))
      if (const std::optional<Choice> remembered = remembered_choice(plan, k, dir, *r)) {
        ++cache().stats.loaded;
        return c = *remembered;
      }
  Context& ctx = context();
  const bool measure = measure_algorithms();
  size_t budget = workspace_budget();
  std::unique_ptr<SearchWorkspace> ws;
  std::unique_ptr<ScratchOutput> scratch;
  if (measure) {
    ws = std::make_unique<SearchWorkspace>(budget);
    budget = ws->bytes();
    scratch = std::make_unique<ScratchOutput>(out, out_bytes);
  }
  void* o = measure ? scratch->get() : nullptr;
  int count = 0, returned = 0;
  Choice found;
  CONV_CHECK(cudnnSetConvolutionMathType(plan.conv, k.search_math()), k);
  if (dir == kForward) {
    CONV_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(ctx.cudnn, &count), k);
    std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(std::max(count, 1));
    count = static_cast<int>(perf.size());
    if (measure)
      CONV_CHECK(cudnnFindConvolutionForwardAlgorithmEx(ctx.cudnn, plan.x, in_a, plan.w, in_b, plan.conv, plan.y,
                                                        o, count, &returned, perf.data(), ws->get(), budget),
                 k);
    else
      CONV_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(ctx.cudnn, plan.x, plan.w, plan.conv, plan.y, count,
                                                        &returned, perf.data()),
                 k);
    found = pick(perf, returned, budget, k, dir);
    CONV_CHECK(cudnnSetConvolutionMathType(plan.conv, found.math), k);
    size_t need = 0;
    CONV_CHECK(cudnnGetConvolutionForwardWorkspaceSize(ctx.cudnn, plan.x, plan.w, plan.conv, plan.y,
                                                       static_cast<cudnnConvolutionFwdAlgo_t>(found.algo), &need),
               k);
    found.workspace_bytes = std::max(found.workspace_bytes, need);
  } else if (dir == kBackwardData) {
    CONV_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(ctx.cudnn, &count), k);
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(std::max(count, 1));
    count = static_cast<int>(perf.size());
    if (measure)
      CONV_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(ctx.cudnn, plan.w, in_a, plan.y, in_b, plan.conv,
                                                             plan.x, o, count, &returned, perf.data(),
                                                             ws->get(), budget),
                 k);
    else
      CONV_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(ctx.cudnn, plan.w, plan.y, plan.conv, plan.x, count,
                                                             &returned, perf.data()),
                 k);
    found = pick(perf, returned, budget, k, dir);
    CONV_CHECK(cudnnSetConvolutionMathType(plan.conv, found.math), k);
    size_t need = 0;
    CONV_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
                   ctx.cudnn, plan.w, plan.y, plan.conv, plan.x,
                   static_cast<cudnnConvolutionBwdDataAlgo_t>(found.algo), &need),
               k);
    found.workspace_bytes = std::max(found.workspace_bytes, need);
  } else {
    CONV_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(ctx.cudnn, &count), k);
    std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(std::max(count, 1));
    count = static_cast<int>(perf.size());
    if (measure)
      CONV_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(ctx.cudnn, plan.x, in_a, plan.y, in_b, plan.conv,
                                                               plan.w, o, count, &returned, perf.data(),
                                                               ws->get(), budget),
                 k);
    else
      CONV_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(ctx.cudnn, plan.x, plan.y, plan.conv, plan.w,
                                                               count, &returned, perf.data()),
                 k);
    found = pick(perf, returned, budget, k, dir);
    CONV_CHECK(cudnnSetConvolutionMathType(plan.conv, found.math), k);
    size_t need = 0;
    CONV_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
                   ctx.cudnn, plan.x, plan.y, plan.conv, plan.w,
                   static_cast<cudnnConvolutionBwdFilterAlgo_t>(found.algo), &need),
               k);
    found.workspace_bytes = std::max(found.workspace_bytes, need);
  }
  ++cache().stats.searches;
  if (file)
    file->remember(file_key(k, dir), {found.algo, static_cast<int>(found.math), found.workspace_bytes, found.ms});
  c = found;  // only now: a search that threw leaves the direction unchosen
  return c;
}

// Runs one convolution call, `call(choice, workspace)`, with its direction's
// algorithm. A choice taken from the file that cuDNN refuses at the call (a
// library rebuilt under the same version number, a changed driver) is dropped
// from the file and searched for again, once: a cache must not fail a run.
// Caller holds cache().mu.
template <class Call>
void run_chosen(ConvPlan& plan, const ConvKey& k, Direction dir, const void* in_a, const void* in_b,
                const void* out, size_t out_bytes, const char* what, Call&& call) {
  const Choice* c = &choose(plan, k, dir, in_a, in_b, out, out_bytes);
  for (;;) {
    void* ws = workspace(c->workspace_bytes);
    CONV_CHECK(cudnnSetConvolutionMathType(plan.conv, c->math), k);
    const cudnnStatus_t st = call(*c, ws);
    if (st == CUDNN_STATUS_SUCCESS) return;
    if (!c->from_file)
      CR_FAIL("cuDNN error: " << what << " failed: " << cudnnGetErrorString(st) << " (" << k.str() << ")");
    std::fprintf(stderr, "covidrate: cuDNN refused the remembered %s algorithm %d for %s (%s); searching again\n",
                 kDirectionName[dir], c->algo, k.str().c_str(), cudnnGetErrorString(st));
    if (AlgorithmCacheFile* file = algorithm_file(k.device)) file->forget(file_key(k, dir));
    plan.choice[dir] = Choice{};
    c = &choose(plan, k, dir, in_a, in_b, out, out_bytes, /*use_file=*/false);
  }
}

const float kOne = 1.0f, kZero = 0.0f;

}  // namespace

ConvPlanStats conv_plan_stats() {
  std::lock_guard<std::mutex> lock(cache().mu);
  return cache().stats;
}

void set_algorithm_cache_path(std::optional<std::string> path) {
  std::lock_guard<std::mutex> lock(cache().mu);
  cache().file_path = std::move(path);
  cache().files.clear();  // reopened, at the new place, at the next choice
}

void forget_conv_plans() {
  std::lock_guard<std::mutex> lock(cache().mu);
  // Descriptors are host objects that cuDNN reads when a call is made, not when
  // its kernels run: destroying them with work in flight is safe.
  cache().plans.clear();
}

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const ConvParams& p, Tensor& y) {
  if (y.numel() == 0) return;
  // Tiny filter banks (the stem, the head, small 1x1s) run in our own kernel.
  if (direct_conv_applies(x, w, p)) return direct_conv_forward(x, w, bias, p, y);
  const ConvKey k = make_key(x.shape(), w.shape(), p, x.dtype(), {x.raw(), w.raw(), y.raw()});
  std::lock_guard<std::mutex> lock(cache().mu);
  ConvPlan& plan = plan_for(k);
  Context& ctx = context();
  run_chosen(plan, k, kForward, x.raw(), w.raw(), y.raw(), y.nbytes(), "cudnnConvolutionForward",
             [&](const Choice& c, void* ws) {
               return cudnnConvolutionForward(ctx.cudnn, &kOne, plan.x, x.raw(), plan.w, w.raw(), plan.conv,
                                              static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), ws,
                                              c.workspace_bytes, &kZero, plan.y, y.raw());
             });
  // y += bias broadcast over N, H, W, then the fused ReLU: our one-pass epilogue
  // for bf16 and wherever there is a ReLU, cuDNN's AddTensor for a plain f32 bias.
  if ((bias && k.bf16) || p.relu) {
    add_channel_bias(bias, y, p.relu);
  } else if (bias) {
    CONV_CHECK(cudnnAddTensor(ctx.cudnn, &kOne, plan.bias, bias->raw(), &kOne, plan.y, y.raw()), k);
  }
}

void conv2d_backward_data(const Tensor& dy, const Tensor& w, const ConvParams& p, Tensor& dx,
                          bool accumulate) {
  if (dx.numel() == 0) return;
  const ConvKey k = make_key(dx.shape(), w.shape(), p, dy.dtype(), {dy.raw(), w.raw(), dx.raw()});
  std::lock_guard<std::mutex> lock(cache().mu);
  ConvPlan& plan = plan_for(k);
  Context& ctx = context();
  // cuDNN computes dx = alpha * conv_transpose(dy, w) + beta * dx: beta 1 accumulates.
  run_chosen(plan, k, kBackwardData, w.raw(), dy.raw(), dx.raw(), dx.nbytes(), "cudnnConvolutionBackwardData",
             [&](const Choice& c, void* ws) {
               return cudnnConvolutionBackwardData(ctx.cudnn, &kOne, plan.w, w.raw(), plan.y, dy.raw(), plan.conv,
                                                   static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo), ws,
                                                   c.workspace_bytes, accumulate ? &kOne : &kZero, plan.x,
                                                   dx.raw());
             });
}

void conv2d_backward_filter(const Tensor& dy, const Tensor& x, const ConvParams& p, Tensor& dw,
                            Tensor* dbias) {
  if (x.numel() == 0) return;  // an empty batch contributes nothing to accumulate
  const ConvKey k = make_key(x.shape(), dw.shape(), p, dy.dtype(), {dy.raw(), x.raw(), dw.raw()});
  std::lock_guard<std::mutex> lock(cache().mu);
  ConvPlan& plan = plan_for(k);
  Context& ctx = context();
  // Parameter gradients always accumulate: beta 1.
  run_chosen(plan, k, kBackwardFilter, x.raw(), dy.raw(), dw.raw(), dw.nbytes(), "cudnnConvolutionBackwardFilter",
             [&](const Choice& c, void* ws) {
               return cudnnConvolutionBackwardFilter(ctx.cudnn, &kOne, plan.x, x.raw(), plan.y, dy.raw(),
                                                     plan.conv, static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo),
                                                     ws, c.workspace_bytes, &kOne, plan.w, dw.raw());
             });
  if (dbias)
    CONV_CHECK(cudnnConvolutionBackwardBias(ctx.cudnn, &kOne, plan.y, dy.raw(), &kOne, plan.bias, dbias->raw()), k);
}

}  // namespace covidrate::cuda
