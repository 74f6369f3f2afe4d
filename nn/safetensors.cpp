#include "nn/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <vector>

#include "nn/json.h"
#include "nn/text_file.h"

namespace covidrate::safetensors {

namespace {

// The same cap as the reference implementation: a header is names and shapes,
// never anywhere near this; a larger size field means a corrupt or hostile file.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Our tensors are little-endian in memory, as the format is.
static_assert(std::endian::native == std::endian::little, "safetensors: big-endian hosts are not supported");

const char* format_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
  }
  return "?";
}

// A file descriptor closed on scope exit.
class File {
 public:
  File(const std::string& path, int flags, mode_t mode = 0) : fd_(::open(path.c_str(), flags, mode)) {}
  ~File() {
    if (fd_ >= 0) ::close(fd_);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

// Reads exactly bytes at offset, or says why not.
void read_exact(const std::string& path, int fd, void* dst, size_t bytes, uint64_t offset) {
  auto* p = static_cast<char*>(dst);
  while (bytes > 0) {
    const ssize_t got = ::pread(fd, p, bytes, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    CR_CHECK(got >= 0, "safetensors: reading '" << path << "' failed: " << std::strerror(errno));
    CR_CHECK(got > 0, "safetensors: '" << path << "' is truncated (ends at byte " << offset << ")");
    p += got;
    bytes -= static_cast<size_t>(got);
    offset += static_cast<uint64_t>(got);
  }
}

struct Entry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range inside the data part
};

struct Header {
  std::vector<Entry> entries;  // sorted by begin
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // file offset of the data part
};

// A non-negative integer as written in JSON (no sign, fraction or exponent).
uint64_t to_uint(const std::string& path, const json::Value& v, const std::string& what) {
  CR_CHECK(v.kind == json::Value::Kind::Number &&
               std::all_of(v.text.begin(), v.text.end(), [](char c) { return c >= '0' && c <= '9'; }),
           "safetensors: '" << path << "': " << what << " must be a non-negative integer, got "
                            << (v.kind == json::Value::Kind::Number ? v.text : json::kind_name(v.kind)));
  CR_CHECK(v.text.size() <= 19, "safetensors: '" << path << "': " << what << " " << v.text << " is too large");
  return std::stoull(v.text);
}

Entry parse_entry(const std::string& path, const std::string& name, const json::Value& v) {
  const std::string where = "tensor '" + name + "'";
  CR_CHECK(v.kind == json::Value::Kind::Object,
           "safetensors: '" << path << "': " << where << " must be an object, got " << json::kind_name(v.kind));
  for (const auto& [key, value] : v.members)
    CR_CHECK(key == "dtype" || key == "shape" || key == "data_offsets",
             "safetensors: '" << path << "': " << where << " has an unknown field '" << key << "'");
  const json::Value* dtype = v.find("dtype");
  const json::Value* shape = v.find("shape");
  const json::Value* offsets = v.find("data_offsets");
  CR_CHECK(dtype && shape && offsets,
           "safetensors: '" << path << "': " << where << " needs dtype, shape and data_offsets");

  Entry e;
  e.name = name;
  CR_CHECK(dtype->kind == json::Value::Kind::String,
           "safetensors: '" << path << "': " << where << " has a dtype that is not a string");
  if (dtype->text == "F32") e.dtype = DType::F32;
  else if (dtype->text == "F64") e.dtype = DType::F64;
  else if (dtype->text == "BF16") e.dtype = DType::BF16;
  else if (dtype->text == "F16") e.dtype = DType::F16;
  else CR_FAIL("safetensors: '" << path << "': " << where << " has unknown or unsupported dtype '"
                                << dtype->text << "' (supported: F32, F64, BF16, F16)");

  CR_CHECK(shape->kind == json::Value::Kind::Array,
           "safetensors: '" << path << "': " << where << " has a shape that is not an array");
  CR_CHECK(shape->items.size() <= 4, "safetensors: '" << path << "': " << where << " has "
                                                      << shape->items.size()
                                                      << " dimensions, at most 4 are supported");
  std::vector<int64_t> dims;
  uint64_t numel = 1;
  for (const json::Value& d : shape->items) {
    const uint64_t n = to_uint(path, d, where + " dimension");
    CR_CHECK(n < (uint64_t{1} << 40) && numel * n < (uint64_t{1} << 48),
             "safetensors: '" << path << "': " << where << " is impossibly large");
    dims.push_back(static_cast<int64_t>(n));
    numel *= n;
  }
  e.shape = Shape(dims);

  CR_CHECK(offsets->kind == json::Value::Kind::Array && offsets->items.size() == 2,
           "safetensors: '" << path << "': " << where << " needs data_offsets [begin, end]");
  e.begin = to_uint(path, offsets->items[0], where + " data_offsets");
  e.end = to_uint(path, offsets->items[1], where + " data_offsets");
  CR_CHECK(e.begin <= e.end, "safetensors: '" << path << "': " << where << " has data_offsets ["
                                              << e.begin << ", " << e.end << "] with begin after end");
  const uint64_t want = numel * dtype_size(e.dtype);
  CR_CHECK(e.end - e.begin == want, "safetensors: '" << path << "': " << where << " ("
                                                     << dtype->text << e.shape.str() << ") needs "
                                                     << want << " bytes, data_offsets [" << e.begin
                                                     << ", " << e.end << "] hold " << e.end - e.begin);
  return e;
}

Header read_header(const std::string& path, int fd) {
  struct stat st {};
  CR_CHECK(::fstat(fd, &st) == 0, "safetensors: cannot stat '" << path << "': " << std::strerror(errno));
  const auto file_size = static_cast<uint64_t>(st.st_size);
  CR_CHECK(file_size >= 8, "safetensors: '" << path << "' is truncated: " << file_size
                                            << " bytes, not even the 8-byte header size");
  uint64_t header_size = 0;
  read_exact(path, fd, &header_size, 8, 0);
  CR_CHECK(header_size <= kMaxHeaderBytes,
           "safetensors: '" << path << "': header size " << header_size << " exceeds the limit of "
                            << kMaxHeaderBytes << " bytes (corrupt file?)");
  CR_CHECK(header_size <= file_size - 8, "safetensors: '" << path << "': header size " << header_size
                                                          << " goes beyond the end of the file ("
                                                          << file_size << " bytes)");
  std::string text(header_size, '\0');
  read_exact(path, fd, text.data(), header_size, 8);

  // The reference reader requires the JSON to start at the first byte (only
  // trailing padding is allowed), and so do we.
  CR_CHECK(!text.empty() && text[0] == '{',
           "safetensors: '" << path << "': the header does not start with '{' (not a safetensors file?)");
  json::Value root;
  try {
    root = json::parse(text);
  } catch (const Error& e) {
    CR_FAIL("safetensors: '" << path << "': bad header: " << e.what());
  }

  Header h;
  h.data_start = 8 + header_size;
  for (const auto& [name, value] : root.members) {
    if (name == "__metadata__") {
      CR_CHECK(value.kind == json::Value::Kind::Object,
               "safetensors: '" << path << "': __metadata__ must be an object of strings");
      for (const auto& [key, text_value] : value.members) {
        CR_CHECK(text_value.kind == json::Value::Kind::String,
                 "safetensors: '" << path << "': __metadata__ value of '" << key << "' is "
                                  << json::kind_name(text_value.kind) << ", must be a string");
        h.metadata[key] = text_value.text;
      }
      continue;
    }
    h.entries.push_back(parse_entry(path, name, value));
  }

  // The byte ranges must tile [0, data size) exactly: sorted by begin, each
  // starts where the previous one ended.
  std::sort(h.entries.begin(), h.entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const uint64_t data_size = file_size - h.data_start;
  uint64_t expected = 0;
  const Entry* previous = nullptr;
  for (const Entry& e : h.entries) {
    CR_CHECK(e.end <= data_size, "safetensors: '" << path << "': tensor '" << e.name
                                                  << "' has data_offsets [" << e.begin << ", " << e.end
                                                  << "] beyond the data part of " << data_size
                                                  << " bytes (truncated file?)");
    CR_CHECK(e.begin >= expected, "safetensors: '" << path << "': tensor '" << e.name << "' [" << e.begin
                                                   << ", " << e.end << ") overlaps tensor '"
                                                   << previous->name << "' [" << previous->begin
                                                   << ", " << previous->end << ")");
    CR_CHECK(e.begin == expected, "safetensors: '" << path << "': gap of " << e.begin - expected
                                                   << " unused bytes before tensor '" << e.name << "'");
    expected = e.end;
    previous = &e;
  }
  CR_CHECK(expected == data_size, "safetensors: '" << path << "': " << data_size - expected
                                                   << " bytes of trailing data after the last tensor");
  return h;
}

}  // namespace

std::map<std::string, Tensor> load(const std::string& path) {
  File file(path, O_RDONLY | O_CLOEXEC);
  CR_CHECK(file.fd() >= 0, "safetensors: cannot open '" << path << "': " << std::strerror(errno));
  const Header h = read_header(path, file.fd());
  std::map<std::string, Tensor> out;
  for (const Entry& e : h.entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype, Device::CPU);
    read_exact(path, file.fd(), t.raw(), t.nbytes(), h.data_start + e.begin);
    out.emplace(e.name, std::move(t));
  }
  return out;
}

std::map<std::string, std::string> load_metadata(const std::string& path) {
  File file(path, O_RDONLY | O_CLOEXEC);
  CR_CHECK(file.fd() >= 0, "safetensors: cannot open '" << path << "': " << std::strerror(errno));
  return read_header(path, file.fd()).metadata;
}

void save(const std::string& path, const std::map<std::string, Tensor>& tensors,
          const std::map<std::string, std::string>& metadata) {
  // The header, with tensors laid out back to back in name order.
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      if (!first) header += ',';
      header += json::quote(key) + ":" + json::quote(value);
      first = false;
    }
    header += "}";
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    CR_CHECK(!name.empty() && name != "__metadata__",
             "safetensors: cannot save '" << path << "': invalid tensor name '" << name << "'");
    CR_CHECK(t.defined(), "safetensors: cannot save '" << path << "': tensor '" << name << "' is undefined");
    if (header.size() > 1) header += ",";
    header += json::quote(name) + ":{\"dtype\":\"" + format_name(t.dtype()) + "\",\"shape\":[";
    const std::vector<int64_t> dims = t.shape().dims();
    for (size_t i = 0; i < dims.size(); ++i) {
      if (i > 0) header += ',';
      header += std::to_string(dims[i]);
    }
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + t.nbytes()) + "]}";
    offset += t.nbytes();
  }
  header += "}";
  // Spaces after the JSON so the data part starts 8-byte aligned, as the
  // reference writer does (readers may then map the tensors in place).
  header.append((8 - header.size() % 8) % 8, ' ');

  // Written beside the destination, then renamed (nn/text_file.h): rename
  // within one file system is atomic, so readers see the old file or the
  // complete new one; every write, the flush and the close are checked.
  try {
    AtomicFile file(path);
    const uint64_t header_size = header.size();
    file.write(&header_size, 8);
    file.write(header.data(), header.size());
    for (const auto& [name, t] : tensors) {
      const Tensor host = t.to(Device::CPU);
      file.write(host.raw(), host.nbytes());
    }
    file.commit();  // on the disk, name included
  } catch (const Error& e) {
    CR_FAIL("safetensors: " << e.what());
  }
}

}  // namespace covidrate::safetensors
