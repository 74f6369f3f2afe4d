// The CUDA runtime layer: caching allocator, copies, the TF32 switch, the
// cuDNN plan cache, and errors that name what failed. Skipped without a GPU.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "kernels/cuda/caching_allocator.h"
#include "kernels/cuda/conv_direct.h"
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cudnn_conv.h"
#include "kernels/cuda/runtime.h"
#include "kernels/op_profile.h"
#include "kernels/ops.h"
#include "nn/host_buffer.h"
#include "tests/cuda/require_gpu.h"
#include "tests/support/test_support.h"
#include "tests/temp_files.h"

using namespace covidrate;

TEST_CASE("size bins: 512 B steps up to 1 MiB, 2 MiB steps above") {
  using A = cuda::CachingAllocator;
  CHECK(A::rounded_size(1) == 512);
  CHECK(A::rounded_size(512) == 512);
  CHECK(A::rounded_size(513) == 1024);
  CHECK(A::rounded_size(1 << 20) == (1 << 20));
  CHECK(A::rounded_size((1 << 20) + 1) == (2 << 20));
  CHECK(A::rounded_size((5 << 20) + 7) == (6 << 20));
}

TEST_CASE("the caching allocator reuses freed blocks of the same bin") {
  Allocator& alloc = cuda::device_allocator();
  CHECK(alloc.device() == Device::CUDA);
  const AllocatorStats before = alloc.stats();
  void* a = alloc.allocate(1000);
  REQUIRE(a != nullptr);
  const AllocatorStats during = alloc.stats();
  CHECK(during.in_use == before.in_use + 1024);
  CHECK(during.peak >= during.in_use);
  CHECK(during.reserved >= during.in_use);
  CHECK(during.allocations == before.allocations + 1);
  alloc.deallocate(a, 1000);
  CHECK(alloc.stats().in_use == before.in_use);

  // 900 bytes fall into the same 1024-byte bin: the same block comes back
  // without another cudaMalloc.
  const uint64_t system_before = alloc.stats().system_allocations;
  void* b = alloc.allocate(900);
  CHECK(b == a);
  CHECK(alloc.stats().system_allocations == system_before);
  alloc.deallocate(b, 900);

  // release_cached hands every cached block back: reserved falls to in use.
  alloc.release_cached();
  const AllocatorStats after = alloc.stats();
  CHECK(after.reserved == after.in_use);
  alloc.reset_peak();
  CHECK(alloc.stats().peak == after.in_use);
}

TEST_CASE("tensors on the GPU come from the caching allocator") {
  Allocator& alloc = cuda::device_allocator();
  const size_t before = alloc.stats().in_use;
  {
    Tensor t = Tensor::empty({3, 5 << 18}, DType::F32, Device::CUDA);  // 15 MiB: a large bin
    CHECK(alloc.stats().in_use == before + (16u << 20));
  }
  CHECK(alloc.stats().in_use == before);
}

TEST_CASE("the device allocator follows the block cache's two memory rules") {
  Allocator& alloc = cuda::device_allocator();
  alloc.release_cached();
  constexpr size_t kMiB = 1 << 20;
  void* four = alloc.allocate(4 * kMiB);
  alloc.deallocate(four, 4 * kMiB);
  const AllocatorStats before = alloc.stats();
  // Rule 1: the 2 MiB class is empty; the cached 4 MiB block is at most twice it.
  void* borrowed = alloc.allocate(3 * kMiB / 2);
  CHECK(borrowed == four);
  CHECK(alloc.stats().in_use == before.in_use + 4 * kMiB);
  CHECK(alloc.stats().system_allocations == before.system_allocations);
  alloc.deallocate(borrowed, 3 * kMiB / 2);
  // Rule 2 (off unless COVIDRATE_CUDA_RELEASE_ON_MISS=1): nothing cached in
  // [16, 32] MiB; with the rule the smaller 4 MiB block goes back before the
  // cudaMalloc, without it the block stays cached (cudaFree waits for the device).
  void* big = alloc.allocate(16 * kMiB);
  const size_t released = cuda::CachingAllocator::releases_smaller_on_miss() ? 4 * kMiB : 0;
  CHECK(alloc.stats().reserved == before.reserved - released + 16 * kMiB);
  alloc.deallocate(big, 16 * kMiB);
  alloc.release_cached();
}

TEST_CASE("freeing a pointer the allocator did not hand out is an error") {
  int on_host = 0;
  CHECK_THROWS_WITH_AS(cuda::device_allocator().deallocate(&on_host, 4),
                       doctest::Contains("did not hand out"), Error);
}

TEST_CASE("copies host -> device -> device -> host keep every value, also for views") {
  const Tensor host = test::randn({4, 3, 5, 7}, 11);
  const Tensor dev = host.to(Device::CUDA);
  CHECK(dev.is_cuda());
  const Tensor dev2 = dev.clone();
  CHECK(dev2.is_cuda());
  const std::vector<float> back = dev2.to_vector();
  const std::vector<float> want = host.to_vector();
  REQUIRE(back.size() == want.size());
  CHECK(std::memcmp(back.data(), want.data(), want.size() * sizeof(float)) == 0);

  // Rows 1..3 of the device tensor, copied into rows 0..2 of a fresh one.
  Tensor part = Tensor::empty({2, 3, 5, 7}, DType::F32, Device::CUDA);
  part.copy_from(dev.slice_batch(1, 3));
  const std::vector<float> got = part.to_vector();
  const size_t row = 3 * 5 * 7;
  CHECK(std::memcmp(got.data(), want.data() + row, 2 * row * sizeof(float)) == 0);
}

TEST_CASE("pinned staging buffers: host memory the GPU copies to and from, cached after the first") {
  // segment's batches go through these (nn/host_buffer.h): a round trip keeps
  // every value, the memory is page-locked, and a second buffer of the same
  // size pins nothing new.
  Allocator& pinned = host_staging_allocator(Device::CUDA);
  CHECK(&pinned == &cuda::pinned_host_allocator());
  CHECK(pinned.device() == Device::CPU);
  const int64_t count = 3 * 512 * 512 + 7;  // not a multiple of the block sizes
  const Tensor values = test::randn({count}, 5);
  uint64_t pinned_after_first = 0;
  for (int round = 0; round < 2; ++round) {
    HostBuffer up(count, Device::CUDA), down(count, Device::CUDA);
    cudaPointerAttributes attributes{};
    CUDA_CHECK(cudaPointerGetAttributes(&attributes, up.data()));
    CHECK(attributes.type == cudaMemoryTypeHost);  // page-locked, not pageable (cudaMemoryTypeUnregistered)
    std::memcpy(up.data(), values.data<float>(), up.bytes());
    Tensor device = Tensor::empty({count}, DType::F32, Device::CUDA);
    copy_bytes(device.raw(), Device::CUDA, up.data(), Device::CPU, up.bytes());
    synchronize(Device::CUDA);
    std::memset(down.data(), 0xff, down.bytes());
    copy_bytes(down.data(), Device::CPU, device.raw(), Device::CUDA, down.bytes());
    CHECK(std::memcmp(down.data(), values.data<float>(), down.bytes()) == 0);
    if (round == 0) pinned_after_first = pinned.stats().system_allocations;
  }
  CHECK(pinned.stats().system_allocations == pinned_after_first);
  CHECK(pinned.stats().in_use == 0);
}

TEST_CASE("queued copies and a fence: two batches in flight come back whole, each in its own buffers") {
  // segment's GPU loop (data/segment_pipeline.cpp): upload, an op and the copy
  // back are queued for batch i + 1 before batch i's fence is waited for.
  const int64_t count = 2 * 512 * 512 + 3;
  const Tensor a = test::randn({count}, 7), b = test::randn({count}, 8);
  struct Flight {
    HostBuffer up, down;
    Tensor in, out;
    DeviceFence done;
  };
  const auto launch = [&](const Tensor& values) {
    Flight f{HostBuffer(count, Device::CUDA), HostBuffer(count, Device::CUDA), {}, {}, {}};
    std::memcpy(f.up.data(), values.data<float>(), f.up.bytes());
    std::memset(f.down.data(), 0xff, f.down.bytes());
    f.in = Tensor::empty({count}, DType::F32, Device::CUDA);
    f.out = Tensor::empty({count}, DType::F32, Device::CUDA);
    copy_bytes_async(f.in.raw(), Device::CUDA, f.up.data(), Device::CPU, f.up.bytes());
    ops::relu_forward(f.in, f.out);
    copy_bytes_async(f.down.data(), Device::CPU, f.out.raw(), Device::CUDA, f.down.bytes());
    f.done = DeviceFence(Device::CUDA);
    return f;
  };
  const auto relu_of = [&](const Tensor& values) {
    std::vector<float> r = values.to_vector();
    for (float& v : r) v = v > 0 ? v : 0;
    return r;
  };
  Flight first = launch(a);
  Flight second = launch(b);  // queued behind the first, before anyone waits
  first.done.wait();
  CHECK(std::memcmp(first.down.data(), relu_of(a).data(), first.down.bytes()) == 0);
  second.done.wait();
  second.done.wait();  // waiting twice is fine
  CHECK(std::memcmp(second.down.data(), relu_of(b).data(), second.down.bytes()) == 0);
  DeviceFence moved = std::move(second.done);
  moved.wait();
}

TEST_CASE("the TF32 switch follows COVIDRATE_TF32") {
  const char* env = std::getenv("COVIDRATE_TF32");
  const bool want = env && std::string(env) == "1";
  CHECK(cuda::context().allow_tf32 == want);
  CHECK(cuda::context().sm_count > 0);
  CHECK(cuda::context().l2_bytes > 0);
  CHECK(cuda::context().stream != nullptr);
}

TEST_CASE("a second convolution of the same shape reuses the cuDNN plan") {
  // 16 -> 24 channels, 3x3: past the direct kernel's bound (kernels/cuda/conv_direct.h), so cuDNN runs it.
  const Tensor x = test::randn({2, 16, 9, 9}, 1).to(Device::CUDA);
  const Tensor w = test::randn({24, 16, 3, 3}, 2).to(Device::CUDA);
  const Tensor b = test::randn({24}, 3).to(Device::CUDA);
  const ConvParams p = ConvParams::same(3);
  REQUIRE_FALSE(cuda::direct_conv_applies(x, w, p));
  Tensor y = Tensor::empty({2, 24, 9, 9}, DType::F32, Device::CUDA);
  cuda::set_algorithm_cache_path(std::string());  // a choice from an earlier run's file would not count as a search
  const cuda::ConvPlanStats s0 = cuda::conv_plan_stats();
  ops::conv2d_forward(x, w, &b, p, y);
  const cuda::ConvPlanStats s1 = cuda::conv_plan_stats();
  CHECK(s1.plans == s0.plans + 1);
  CHECK(s1.searches == s0.searches + 1);
  const std::vector<float> first = y.to_vector();
  ops::conv2d_forward(x, w, &b, p, y);
  const cuda::ConvPlanStats s2 = cuda::conv_plan_stats();
  CHECK(s2.plans == s1.plans);
  CHECK(s2.searches == s1.searches);
  CHECK(s2.hits == s1.hits + 1);
  // Same plan, same algorithm: bit-identical output.
  const std::vector<float> second = y.to_vector();
  CHECK(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0);
  cuda::set_algorithm_cache_path(std::nullopt);
}

TEST_CASE("a measured choice is taken from the algorithm cache file by the next process") {
  test::TempDir dir;
  const std::string path = dir.file("cudnn.tsv");
  cuda::set_algorithm_cache_path(path);
  // A shape no other test uses, so that its plan is new to this process (and
  // past the direct kernel's bound, so that cuDNN runs it).
  const Tensor x = test::randn({3, 24, 19, 17}, 11).to(Device::CUDA);
  const Tensor w = test::randn({28, 24, 3, 3}, 12).to(Device::CUDA);
  const ConvParams p = ConvParams::same(3);
  REQUIRE_FALSE(cuda::direct_conv_applies(x, w, p));
  Tensor y = Tensor::empty({3, 28, 19, 17}, DType::F32, Device::CUDA);
  const auto lines = [&] {
    std::vector<std::string> out;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  };

  const cuda::ConvPlanStats s0 = cuda::conv_plan_stats();
  ops::conv2d_forward(x, w, nullptr, p, y);
  const std::vector<float> searched = y.to_vector();
  const cuda::ConvPlanStats s1 = cuda::conv_plan_stats();
  CHECK(s1.searches == s0.searches + 1);
  CHECK(s1.loaded == s0.loaded);
  std::vector<std::string> file = lines();
  REQUIRE(file.size() == 3);  // magic, identity, the one choice
  CHECK(file[2].rfind("forward, x [3, 24, 19, 17]", 0) == 0);

  // As a new process would: no plans, the choice read from the file, same algorithm, same bits.
  cuda::forget_conv_plans();
  cuda::set_algorithm_cache_path(path);
  ops::conv2d_forward(x, w, nullptr, p, y);
  const cuda::ConvPlanStats s2 = cuda::conv_plan_stats();
  CHECK(s2.searches == s1.searches);
  CHECK(s2.loaded == s1.loaded + 1);
  const std::vector<float> loaded = y.to_vector();
  CHECK(std::memcmp(searched.data(), loaded.data(), searched.size() * sizeof(float)) == 0);

  // A remembered algorithm cuDNN does not have: not used, searched again, replaced in the file.
  const size_t algo_at = file[2].find('\t') + 1;
  file[2].replace(algo_at, file[2].find('\t', algo_at) - algo_at, "99");
  {
    std::ofstream out(path, std::ios::trunc);
    for (const std::string& line : file) out << line << '\n';
  }
  cuda::forget_conv_plans();
  cuda::set_algorithm_cache_path(path);
  ops::conv2d_forward(x, w, nullptr, p, y);
  const cuda::ConvPlanStats s3 = cuda::conv_plan_stats();
  CHECK(s3.searches == s2.searches + 1);
  CHECK(s3.loaded == s2.loaded);
  CHECK(test::rel_l2(y.to(Device::CPU), Tensor::from_vector(y.shape(), searched)) < 1e-5);
  REQUIRE(lines().size() == 3);
  CHECK(lines()[2].find("\t99\t") == std::string::npos);

  cuda::forget_conv_plans();
  cuda::set_algorithm_cache_path(std::nullopt);
}

TEST_CASE("an impossible allocation throws an error naming the size, and the GPU stays usable") {
  const size_t absurd = size_t{1} << 46;  // 64 TiB
  try {
    cuda::device_allocator().allocate(absurd);
    FAIL("allocating 64 TiB succeeded");
  } catch (const Error& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("out of memory allocating " + std::to_string(absurd) + " bytes") != std::string::npos);
    CHECK(msg.find("MiB in use") != std::string::npos);
  }
  // The failed cudaMalloc must not be reported by the next kernel launch check.
  Tensor t = Tensor::full({1000}, 2.5, DType::F32, Device::CUDA);
  CHECK(t.to_vector()[999] == 2.5f);
}

TEST_CASE("ops reject tensors on two devices, and dtypes the GPU does not take") {
  Tensor x = Tensor::zeros({2, 3}, DType::F32), y = Tensor::zeros({2, 3}, DType::F32, Device::CUDA);
  CHECK_THROWS_WITH_AS(ops::relu_forward(x, y), doctest::Contains("relu_forward"), Error);
  CHECK_THROWS_WITH_AS(ops::relu_forward(x, y), doctest::Contains("cuda"), Error);
  CHECK_THROWS_WITH_AS(ops::relu_forward(x, y), doctest::Contains("cpu"), Error);
  // empty, not zeros: filling would already reject f64 on the GPU.
  Tensor x64 = Tensor::empty({2, 3}, DType::F64, Device::CUDA);
  Tensor y64 = Tensor::empty({2, 3}, DType::F64, Device::CUDA);
  CHECK_THROWS_WITH_AS(ops::sigmoid_forward(x64, y64), doctest::Contains("unsupported dtype f64 on cuda"), Error);
  CHECK_THROWS_WITH_AS(ops::sigmoid_forward(x64, y64), doctest::Contains("sigmoid_forward"), Error);
}

TEST_CASE("a failing CUDA call names the call in the error") {
  CHECK_THROWS_WITH_AS(CUDA_CHECK(cudaSetDevice(12345)), doctest::Contains("cudaSetDevice(12345)"), Error);
  // cudaSetDevice failed before switching: the context is still usable.
  Tensor t = Tensor::full({10}, 1.0, DType::F32, Device::CUDA);
  CHECK(t.to_vector()[0] == 1.0f);
}

TEST_CASE("flipping allow_tf32 takes effect at the next call, and flipping back restores float32") {
  cuda::Context& ctx = cuda::context();
  const bool saved = ctx.allow_tf32;
  const Tensor x = test::randn({64, 512}, 21), w = test::randn({256, 512}, 22);
  const Tensor xi = test::randn({2, 16, 48, 48}, 23), wi = test::randn({16, 16, 3, 3}, 24);
  const ConvParams p = ConvParams::same(3);
  Tensor y_ref = Tensor::empty({64, 256}), c_ref = Tensor::empty({2, 16, 48, 48});
  ops::linear_forward(x, w, y_ref);
  ops::conv2d_forward(xi, wi, nullptr, p, c_ref);

  const Tensor xd = x.to(Device::CUDA), wd = w.to(Device::CUDA);
  const Tensor xid = xi.to(Device::CUDA), wid = wi.to(Device::CUDA);
  Tensor y = Tensor::empty({64, 256}, DType::F32, Device::CUDA);
  Tensor c = Tensor::empty({2, 16, 48, 48}, DType::F32, Device::CUDA);
  for (bool tf32 : {true, false}) {
    CAPTURE(tf32);
    ctx.allow_tf32 = tf32;
    const uint64_t plans = cuda::conv_plan_stats().plans;
    ops::linear_forward(xd, wd, y);
    ops::conv2d_forward(xid, wid, nullptr, p, c);
    // TF32 may or may not be used when allowed; float32 must be exact to rounding.
    const double bound = tf32 ? 1e-2 : 1e-5;
    CHECK(test::rel_l2(y, y_ref) < bound);
    CHECK(test::rel_l2(c, c_ref) < bound);
    if (tf32) CHECK(cuda::conv_plan_stats().plans == plans + 1);  // TF32 is part of the plan's key
  }
  ctx.allow_tf32 = saved;
}

TEST_CASE("the op profiler times CUDA ops by events on the stream") {
  const Tensor x = test::randn({4, 16, 64, 64}, 1).to(Device::CUDA);
  Tensor y = Tensor::empty(x.shape(), DType::F32, Device::CUDA);
  profile::set_enabled(true);
  profile::reset();
  for (int i = 0; i < 5; ++i) ops::relu_forward(x, y);
  profile::set_enabled(false);
  const std::vector<profile::OpTime> rows = profile::collect();
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].op == "relu_forward");
  CHECK(rows[0].device == Device::CUDA);
  CHECK(rows[0].calls == 5);
  CHECK(rows[0].total_ms > 0);
  CHECK(rows[0].total_ms < 1000);
  profile::reset();
}
