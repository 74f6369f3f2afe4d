// safetensors: round trips, files laid out by the reference (Python) writer,
// and every kind of corruption rejected with a message naming the problem.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "nn/safetensors.h"
#include "tests/support/test_support.h"

using namespace covidrate;
namespace fs = std::filesystem;

namespace {

// A fresh folder per test case, removed afterwards.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("covidrate_st_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(counter()++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
  static int& counter() {
    static int n = 0;
    return n;
  }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A file as the reference writer lays it out: size, JSON header padded with
// spaces to a multiple of 8, then the data bytes.
std::string make_file(std::string header, const std::string& data, bool pad = true) {
  if (pad) header.append((8 - header.size() % 8) % 8, ' ');
  uint64_t n = header.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

std::string floats_le(std::initializer_list<float> values) {
  std::string out;
  for (float f : values) out.append(reinterpret_cast<const char*>(&f), 4);
  return out;
}

// Loading must fail with a message containing `needle`.
void expect_rejected(const std::string& path, const std::string& needle) {
  CAPTURE(needle);
  bool threw = false;
  try {
    safetensors::load(path);
  } catch (const Error& e) {
    threw = true;
    const std::string msg = e.what();
    CAPTURE(msg);
    CHECK(msg.find(needle) != std::string::npos);
    CHECK(msg.find(path) != std::string::npos);
  }
  CHECK(threw);
}

const std::string kOneTensor = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

}  // namespace

TEST_CASE("round trip of f32 and f64 tensors with metadata") {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  std::map<std::string, Tensor> tensors;
  tensors["enc1.conv.weight"] = test::randn(Shape{4, 3, 3, 3}, 1);
  tensors["bn.running_var"] = test::uniform(Shape{4}, 2, 0.5, 2.0, DType::F64);
  tensors["scalar"] = Tensor::from_vector(Shape{}, std::vector<float>{3.5f});
  tensors["empty"] = Tensor::empty(Shape{0, 5});
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "quote \" and \\ and \n"}};
  safetensors::save(path, tensors, meta);

  // The data part starts 8-byte aligned, and no temporary file is left behind.
  const std::string bytes = read_bytes(path);
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  CHECK(header_size % 8 == 0);
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 1);

  const auto loaded = safetensors::load(path);
  REQUIRE(loaded.size() == tensors.size());
  for (const auto& [name, t] : tensors) {
    CAPTURE(name);
    const Tensor& l = loaded.at(name);
    CHECK(l.shape() == t.shape());
    CHECK(l.dtype() == t.dtype());
    CHECK(l.device() == Device::CPU);
    if (t.nbytes() > 0) CHECK(std::memcmp(l.raw(), t.raw(), t.nbytes()) == 0);
  }
  CHECK(safetensors::load_metadata(path) == meta);
}

TEST_CASE("saving over an existing file replaces it") {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  safetensors::save(path, {{"x", Tensor::full(Shape{3}, 1.0)}});
  safetensors::save(path, {{"y", Tensor::full(Shape{2}, 2.0)}});
  const auto loaded = safetensors::load(path);
  REQUIRE(loaded.size() == 1);
  CHECK(loaded.at("y").to_vector() == std::vector<float>{2.0f, 2.0f});
  CHECK(safetensors::load_metadata(path).empty());
}

TEST_CASE("a file in the reference writer's layout loads") {
  TempDir dir;
  const std::string path = dir.file("py.safetensors");
  // Python's writer orders tensors by dtype alignment then name, puts
  // __metadata__ first and pads the header with spaces; names may use any UTF-8.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b\u00e9ta":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},)"
      R"("alpha":{"dtype":"F32","shape":[2,1],"data_offsets":[8,16]},)"
      R"("half":{"dtype":"F16","shape":[1],"data_offsets":[16,18]}})";
  double d = -1.25;
  std::string data(reinterpret_cast<const char*>(&d), 8);
  data += floats_le({1.5f, -2.0f});
  data += std::string("\x00\x3c", 2);  // 1.0 in IEEE half precision
  write_bytes(path, make_file(header, data));
  const auto t = safetensors::load(path);
  REQUIRE(t.size() == 3);
  CHECK(t.at("b\xc3\xa9ta").to_vector_f64() == std::vector<double>{-1.25});
  CHECK(t.at("alpha").shape() == (Shape{2, 1}));
  CHECK(t.at("alpha").to_vector() == std::vector<float>{1.5f, -2.0f});
  CHECK(t.at("half").dtype() == DType::F16);
  CHECK(safetensors::load_metadata(path).at("format") == "pt");
}

TEST_CASE("a file written by Python's safetensors loads") {
  // tests/golden/python_written.safetensors was written on the GPU machine by
  // Hugging Face safetensors 0.8.0 (safetensors.torch.save_file), from:
  //   conv.weight    (torch.arange(24, float32).reshape(2, 3, 2, 2) - 12) / 8
  //   bn.running_var [1.5, -2.25] float64
  //   half           [1.0, -0.5, 65504.0] float16
  //   brain          [3.0, -1.0] bfloat16
  //   scalar         torch.tensor(7.0)           (rank 0)
  //   empty          torch.zeros(0, 3)
  // with metadata {"format": "pt", "writer": "safetensors 0.8.0"}.
  const std::string path = test::source_dir() + "/tests/golden/python_written.safetensors";
  const auto t = safetensors::load(path);
  REQUIRE(t.size() == 6);
  std::vector<float> conv;
  for (int i = 0; i < 24; ++i) conv.push_back((i - 12) / 8.0f);
  CHECK(t.at("conv.weight").shape() == (Shape{2, 3, 2, 2}));
  CHECK(t.at("conv.weight").to_vector() == conv);
  CHECK(t.at("bn.running_var").dtype() == DType::F64);
  CHECK(t.at("bn.running_var").to_vector_f64() == std::vector<double>{1.5, -2.25});
  auto bits16 = [](const Tensor& x) {
    std::vector<uint16_t> out(static_cast<size_t>(x.numel()));
    std::memcpy(out.data(), x.raw(), x.nbytes());
    return out;
  };
  CHECK(t.at("half").dtype() == DType::F16);
  CHECK(bits16(t.at("half")) == std::vector<uint16_t>{0x3C00, 0xB800, 0x7BFF});
  CHECK(t.at("brain").dtype() == DType::BF16);
  CHECK(bits16(t.at("brain")) == std::vector<uint16_t>{0x4040, 0xBF80});
  CHECK(t.at("scalar").shape().rank() == 0);
  CHECK(t.at("scalar").to_vector() == std::vector<float>{7.0f});
  CHECK(t.at("empty").shape() == (Shape{0, 3}));
  const auto meta = safetensors::load_metadata(path);
  CHECK(meta.at("format") == "pt");
  CHECK(meta.at("writer") == "safetensors 0.8.0");
}

TEST_CASE("corrupt files are rejected with a message naming the problem") {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  const std::string data = floats_le({1.0f, 2.0f});

  SUBCASE("missing file") { expect_rejected(dir.file("nope.safetensors"), "cannot open"); }
  SUBCASE("shorter than the size field") {
    write_bytes(path, "abc");
    expect_rejected(path, "truncated");
  }
  SUBCASE("header size beyond the file") {
    std::string bytes = make_file(kOneTensor, data);
    const uint64_t huge = bytes.size();
    std::memcpy(bytes.data(), &huge, 8);
    write_bytes(path, bytes);
    expect_rejected(path, "beyond the end of the file");
  }
  SUBCASE("absurd header size") {
    std::string bytes = make_file(kOneTensor, data);
    const uint64_t huge = uint64_t{1} << 40;
    std::memcpy(bytes.data(), &huge, 8);
    write_bytes(path, bytes);
    expect_rejected(path, "exceeds the limit");
  }
  SUBCASE("truncated data") {
    write_bytes(path, make_file(kOneTensor, data.substr(0, 5)));
    expect_rejected(path, "truncated");
  }
  SUBCASE("bad JSON: trailing comma") {
    write_bytes(path, make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},})", data));
    expect_rejected(path, "bad header");
  }
  SUBCASE("bad JSON: unterminated") {
    write_bytes(path, make_file(R"({"a":{"dtype":"F32")", data));
    expect_rejected(path, "bad header");
  }
  SUBCASE("bad JSON: duplicate name") {
    write_bytes(path, make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                data));
    expect_rejected(path, "duplicate key");
  }
  SUBCASE("bad JSON: garbage after the object") {
    write_bytes(path, make_file(kOneTensor + "x", data));
    expect_rejected(path, "after the value");
  }
  SUBCASE("header not an object") {
    write_bytes(path, make_file("[1,2]", data));
    expect_rejected(path, "does not start with '{'");
  }
  SUBCASE("leading whitespace before the header") {
    write_bytes(path, make_file(" " + kOneTensor, data));
    expect_rejected(path, "does not start with '{'");
  }
  SUBCASE("not a safetensors file at all") {
    write_bytes(path, std::string(64, 'x'));
    expect_rejected(path, "exceeds the limit");
  }
  SUBCASE("unknown dtype") {
    write_bytes(path, make_file(R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", data));
    expect_rejected(path, "unknown or unsupported dtype 'Q7'");
  }
  SUBCASE("unknown field") {
    write_bytes(path, make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", data));
    expect_rejected(path, "unknown field 'x'");
  }
  SUBCASE("negative dimension") {
    write_bytes(path, make_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data));
    expect_rejected(path, "non-negative integer");
  }
  SUBCASE("offsets do not match shape and dtype") {
    write_bytes(path, make_file(R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", data));
    expect_rejected(path, "needs 16 bytes");
  }
  SUBCASE("offsets out of range") {
    write_bytes(path, make_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", data));
    expect_rejected(path, "beyond the data part");
  }
  SUBCASE("begin after end") {
    write_bytes(path, make_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", data));
    expect_rejected(path, "begin after end");
  }
  SUBCASE("overlapping tensors") {
    write_bytes(path, make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                data));
    expect_rejected(path, "overlaps tensor 'a'");
  }
  SUBCASE("gap between tensors") {
    write_bytes(path, make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data));
    expect_rejected(path, "gap of 4 unused bytes");
  }
  SUBCASE("trailing garbage") {
    write_bytes(path, make_file(kOneTensor, data + "junk"));
    expect_rejected(path, "4 bytes of trailing data");
  }
  SUBCASE("metadata value not a string") {
    write_bytes(path, make_file(R"({"__metadata__":{"epoch":3}})", ""));
    expect_rejected(path, "must be a string");
  }
  SUBCASE("more than 4 dimensions") {
    write_bytes(path, make_file(R"({"a":{"dtype":"F32","shape":[1,1,1,1,2],"data_offsets":[0,8]}})", data));
    expect_rejected(path, "at most 4");
  }
}

TEST_CASE("save reports a folder that does not exist") {
  TempDir dir;
  const std::string path = dir.file("missing/w.safetensors");
  try {
    safetensors::save(path, {{"x", Tensor::zeros(Shape{1})}});
    FAIL("save into a missing folder succeeded");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find(path) != std::string::npos);
  }
}
