// The file of measured cuDNN choices (kernels/algorithm_cache.h): what one
// process writes the next one reads; two writers merge; a corrupt, foreign or
// unwritable file never stops a run. The CUDA side (choices taken from the
// file instead of a search) is tests/cuda/test_cuda_runtime.cpp.
// gpu_check: CPU only (its CUDA side is a program in tests/cuda).
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "kernels/algorithm_cache.h"
#include "tests/temp_files.h"

using namespace covidrate;

namespace {

const std::string kIdentity = "NVIDIA H200, sm 9.0, cuDNN 91900";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Sets an environment variable for one scope; restores it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_) ::setenv(name_, old_.c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

}  // namespace

TEST_CASE("a choice one process remembers, the next one finds") {
  test::TempDir dir;
  const std::string path = dir.file("sub/folder/cudnn.tsv");  // folders are created
  const AlgorithmRecord a{6, 1, 1610612736, 2.625}, b{1, 0, 0, 0.5};
  {
    AlgorithmCacheFile file(path, kIdentity);
    CHECK(file.size() == 0);
    CHECK_FALSE(file.find("forward x [16, 128, 512, 512]"));
    CHECK(file.remember("forward x [16, 128, 512, 512]", a));
    CHECK(file.remember("backward data x [4, 32, 352, 352]", b));
    CHECK(file.find("forward x [16, 128, 512, 512]") == a);
  }
  AlgorithmCacheFile again(path, kIdentity);
  CHECK(again.size() == 2);
  CHECK(again.find("forward x [16, 128, 512, 512]") == a);
  CHECK(again.find("backward data x [4, 32, 352, 352]") == b);
  // No temporary file left beside it.
  int entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.file("sub/folder"))) ++entries;
  CHECK(entries == 1);
}

TEST_CASE("two processes writing one file keep each other's choices; a forgotten one stays gone") {
  test::TempDir dir;
  const std::string path = dir.file("cudnn.tsv");
  AlgorithmCacheFile first(path, kIdentity), second(path, kIdentity);  // both opened before either writes
  REQUIRE(first.remember("k1", {1, 0, 10, 1.0}));
  REQUIRE(second.remember("k2", {2, 0, 20, 2.0}));
  REQUIRE(second.remember("k1", {3, 1, 30, 0.5}));  // second re-measured k1
  REQUIRE(first.remember("k3", {4, 0, 40, 4.0}));   // first writes its own k1 back: a process keeps what it measured
  AlgorithmCacheFile merged(path, kIdentity);
  CHECK(merged.size() == 3);
  CHECK(merged.find("k2")->algo == 2);
  CHECK(merged.find("k3")->algo == 4);
  CHECK(merged.find("k1")->algo == 1);  // first's own record wins in first's write
  REQUIRE(merged.forget("k2"));
  AlgorithmCacheFile after(path, kIdentity);
  CHECK_FALSE(after.find("k2"));
  CHECK(after.size() == 2);
}

TEST_CASE("a file written for another GPU or cuDNN is not used, and is replaced") {
  test::TempDir dir;
  const std::string path = dir.file("cudnn.tsv");
  AlgorithmCacheFile(path, "NVIDIA H100 80GB HBM3, sm 9.0, cuDNN 91900").remember("k", {5, 0, 0, 1.0});
  AlgorithmCacheFile other(path, kIdentity);
  CHECK(other.size() == 0);
  CHECK_FALSE(other.find("k"));
  REQUIRE(other.remember("k", {7, 0, 0, 1.0}));
  const std::string text = read_text(path);
  CHECK(text.find(kIdentity) != std::string::npos);
  CHECK(text.find("H100") == std::string::npos);
}

TEST_CASE("a corrupt file is ignored with a warning and rewritten whole") {
  test::TempDir dir;
  const std::string path = dir.file("cudnn.tsv");
  const std::string header = "covidrate algorithm cache v1\n" + kIdentity + "\n";
  for (const std::string& text :
       {std::string("garbage\n"), std::string("covidrate algorithm cache v1\n"), header + "k\t1\t0\t12\n",
        header + "k\tone\t0\t12\t1.0\n", header + "k\t1\t0\t-12x\t1.0\n", header + "k\t1\t0\t-12\t1.0\n", header + "\t1\t0\t12\t1.0\n",
        header + "good\t1\t0\t12\t1.0\nk\t-3\t0\t12\t1.0\n"}) {
    CAPTURE(text);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
    AlgorithmCacheFile file(path, kIdentity);
    CHECK(file.size() == 0);  // nothing half-read, not even the good line before the bad one
    REQUIRE(file.remember("fresh", {2, 0, 0, 1.0}));
    AlgorithmCacheFile reread(path, kIdentity);
    CHECK(reread.size() == 1);
    CHECK(reread.find("fresh")->algo == 2);
  }
}

TEST_CASE("a cache that cannot be written leaves the choice in memory and the run going") {
  test::TempDir dir;
  std::ofstream(dir.file("a-file")) << "x";
  // The cache's folder would have to be created inside a regular file.
  AlgorithmCacheFile file(dir.file("a-file/cudnn.tsv"), kIdentity);
  CHECK_FALSE(file.remember("k", {1, 0, 0, 1.0}));
  CHECK(file.find("k")->algo == 1);
  CHECK_FALSE(file.remember("bad\tkey", {1, 0, 0, 1.0}));
  CHECK_FALSE(file.find("bad\tkey"));
}

TEST_CASE("the cache's place: COVIDRATE_CUDNN_CACHE, else XDG_CACHE_HOME, else HOME") {
  {
    ScopedEnv env("COVIDRATE_CUDNN_CACHE", "/tmp/mine.tsv");
    CHECK(default_algorithm_cache_path("x.tsv") == "/tmp/mine.tsv");
  }
  for (const char* off : {"off", "0"}) {
    ScopedEnv env("COVIDRATE_CUDNN_CACHE", off);
    CHECK(default_algorithm_cache_path("x.tsv").empty());
  }
  ScopedEnv unset("COVIDRATE_CUDNN_CACHE", nullptr);
  {
    ScopedEnv xdg("XDG_CACHE_HOME", "/var/cache/u");
    CHECK(default_algorithm_cache_path("x.tsv") == "/var/cache/u/covidrate/x.tsv");
  }
  ScopedEnv no_xdg("XDG_CACHE_HOME", nullptr);
  {
    ScopedEnv home("HOME", "/home/u");
    CHECK(default_algorithm_cache_path("x.tsv") == "/home/u/.cache/covidrate/x.tsv");
  }
  ScopedEnv no_home("HOME", nullptr);
  CHECK(default_algorithm_cache_path("x.tsv").empty());
  CHECK(file_name_part("NVIDIA H100 80GB HBM3/x") == "NVIDIA_H100_80GB_HBM3_x");
}
