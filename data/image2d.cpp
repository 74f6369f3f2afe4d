// PNG and JPG through stb_image / stb_image_write. The stb implementations are
// compiled here and nowhere else.
#include "data/image2d.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <vector>

#include "data/parallel_deflate.h"
#include "nn/error.h"

#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_FAILURE_USERMSG
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
// stb's PNG writer deflates with a small compressor of its own; zlib, linked
// anyway for .nii.gz, does it faster and smaller. stb frees the result with free().
namespace {
// zlib level for PNGs (the montage, overlays, masks): see docs/segment.md for
// the time and size of each level on a RICORD report.
constexpr int kPngZlibLevel = 6;
// Deflated in blocks on all threads (data/parallel_deflate.h): the montage's
// 4.7 MB of filtered rows took 0.3 s of a report on one thread.
unsigned char* deflate_with_zlib(unsigned char* data, int length, int* out_length, int /*stb's level*/) {
  const std::vector<unsigned char> z =
      covidrate::data::zlib_compress(reinterpret_cast<const char*>(data), static_cast<size_t>(length), kPngZlibLevel);
  if (z.empty()) return nullptr;
  auto* out = static_cast<unsigned char*>(std::malloc(z.size()));
  if (!out) return nullptr;
  std::memcpy(out, z.data(), z.size());
  *out_length = static_cast<int>(z.size());
  return out;
}
}  // namespace
#define STBIW_ZLIB_COMPRESS deflate_with_zlib
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

namespace covidrate::data {
namespace {

std::vector<unsigned char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  CR_CHECK(in, path << ": cannot open");
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CR_CHECK(!in.bad(), path << ": read error");
  return bytes;
}

bool is_png(const std::vector<unsigned char>& b) {
  static const unsigned char signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  return b.size() >= 8 && std::memcmp(b.data(), signature, 8) == 0;
}

uint32_t big_endian_u32(const unsigned char* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

// The palette of a palette PNG (colour type 3), as RGB triples; empty for any
// other PNG. stb_image expands palettes to colours, so the indices -- the class
// labels of a multiclass mask -- are recovered by looking the colours up here.
std::vector<std::array<unsigned char, 3>> png_palette(const std::vector<unsigned char>& b) {
  std::vector<std::array<unsigned char, 3>> palette;
  bool palette_type = false;
  for (size_t at = 8; at + 12 <= b.size();) {
    const uint32_t length = big_endian_u32(&b[at]);
    if (length > b.size() - at - 12) break;  // malformed: stb_image will report it
    const unsigned char* type = &b[at + 4];
    const unsigned char* data = &b[at + 8];
    if (std::memcmp(type, "IHDR", 4) == 0 && length >= 10) palette_type = data[9] == 3;
    if (std::memcmp(type, "PLTE", 4) == 0) {
      for (uint32_t k = 0; k + 3 <= length; k += 3) palette.push_back({data[k], data[k + 1], data[k + 2]});
    }
    if (std::memcmp(type, "IDAT", 4) == 0) break;  // PLTE precedes the image data
    at += 12 + length;
  }
  if (!palette_type) palette.clear();
  return palette;
}

void write_png_atomically(const std::string& path, const uint8_t* pixels, int64_t width, int64_t height, int channels) {
  CR_CHECK(pixels != nullptr, path << ": no pixels to write");
  CR_CHECK(width >= 1 && height >= 1 && width <= (1 << 24) && height <= (1 << 24) &&
               width * channels <= std::numeric_limits<int>::max(),
           path << ": cannot write a " << width << " x " << height << " PNG");
  // Written beside the target and renamed, so no reader sees half a file.
  const std::string temp = path + ".tmp-" + std::to_string(::getpid());
  const int ok = stbi_write_png(temp.c_str(), static_cast<int>(width), static_cast<int>(height), channels, pixels,
                                static_cast<int>(width * channels));
  std::error_code ec;
  if (ok) std::filesystem::rename(temp, path, ec);
  if (!ok || ec) {
    std::filesystem::remove(temp, ec);
    CR_FAIL(path << ": cannot write the PNG file");
  }
}

}  // namespace

Volume read_image(const std::string& path) {
  const std::vector<unsigned char> bytes = read_file(path);
  CR_CHECK(bytes.size() <= static_cast<size_t>(std::numeric_limits<int>::max()), path << ": file too large");
  int width = 0, height = 0, channels = 0;
  unsigned char* decoded =
      stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &width, &height, &channels, 0);
  CR_CHECK(decoded != nullptr, path << ": cannot decode as PNG or JPG (" << stbi_failure_reason() << ")");
  const std::unique_ptr<unsigned char, void (*)(void*)> owner(decoded, stbi_image_free);

  Volume v;
  v.source = path;
  v.nx = width;
  v.ny = height;
  v.nz = 1;
  v.voxels.resize(static_cast<size_t>(v.voxel_count()));
  const bool png = is_png(bytes);
  const auto palette = png ? png_palette(bytes) : std::vector<std::array<unsigned char, 3>>{};
  const int64_t n = v.voxel_count();

  if (!palette.empty()) {
    // First index wins when a palette repeats a colour.
    std::map<std::array<unsigned char, 3>, int> index_of;
    for (int k = static_cast<int>(palette.size()) - 1; k >= 0; --k) index_of[palette[static_cast<size_t>(k)]] = k;
    for (int64_t i = 0; i < n; ++i) {
      const unsigned char* p = decoded + i * channels;
      const auto found = index_of.find({p[0], p[1], p[2]});
      CR_CHECK(found != index_of.end(), path << ": pixel " << i << " has a colour not in the palette");
      v.voxels[static_cast<size_t>(i)] = static_cast<float>(found->second);
    }
    v.intensity = Intensity::Label;
    v.description = "palette PNG: values are palette indices (" + std::to_string(palette.size()) + " colours)";
    return v;
  }

  // Gray (+ alpha) keeps channel 0; RGB (+ alpha) averages the three colours.
  const int colours = channels >= 3 ? 3 : 1;
  bool only_0_255 = true, only_0_1 = true;
  for (int64_t i = 0; i < n; ++i) {
    const unsigned char* p = decoded + i * channels;
    int sum = 0;
    for (int c = 0; c < colours; ++c) sum += p[c];
    const float value = static_cast<float>(sum) / static_cast<float>(colours);
    v.voxels[static_cast<size_t>(i)] = value;
    only_0_255 = only_0_255 && (value == 0 || value == 255);
    only_0_1 = only_0_1 && (value == 0 || value == 1);
  }
  if (png && (only_0_255 || only_0_1)) {
    if (only_0_255)
      for (float& x : v.voxels) x = x > 0 ? 1.0f : 0.0f;
    v.intensity = Intensity::Label;
    v.description = "binary mask PNG (values 0 and 1)";
  } else {
    v.intensity = Intensity::Picture8Bit;
    v.description = std::string(png ? "PNG" : "JPG") + " picture, " + (colours == 3 ? "RGB averaged to gray" : "gray");
  }
  return v;
}

void write_png_gray(const std::string& path, const uint8_t* pixels, int64_t width, int64_t height) {
  write_png_atomically(path, pixels, width, height, 1);
}

void write_png_rgb(const std::string& path, const uint8_t* rgb, int64_t width, int64_t height) {
  write_png_atomically(path, rgb, width, height, 3);
}

}  // namespace covidrate::data
