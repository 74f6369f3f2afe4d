// PNG through stb_image / stb_image_write (whose implementations are compiled
// here and nowhere else), JPG through libjpeg-turbo.
#include "data/image2d.h"

// libjpeg's header needs FILE and size_t declared first.
#include <cstdio>
#include <jpeglib.h>

#include <algorithm>
#include <csetjmp>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <vector>

#include "data/parallel_deflate.h"
#include "nn/error.h"
#include "nn/text_file.h"

// JPG is decoded by libjpeg-turbo (below), not stb_image: fuzzing read_image
// (fuzz/fuzz_image.cpp) broke stb's JPEG decoder within 300 inputs, a Huffman
// table whose counts add up past 256 writing beyond its array
// (stb_image.h:1990 in Debian 12's libstb): memory corruption from a damaged
// file. libjpeg-turbo is the reference decoder, fuzzed continuously upstream.
// stb_image keeps the PNGs, which the same fuzzing has not broken (fuzz/README.md).
#define STBI_ONLY_PNG
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
// No file functions: every PNG goes through write_png_atomically.
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

// libjpeg reports errors through a callback that must not return; the usual
// way out is longjmp, which must not cross C++ frames with destructors. So the
// decoder below is C-like: plain locals and a malloc'ed result its caller owns.
namespace {
struct JpegErrorTrap {
  jpeg_error_mgr manager;  // first: libjpeg sees a jpeg_error_mgr*
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void jpeg_trap_error(j_common_ptr info) {
  auto* trap = reinterpret_cast<JpegErrorTrap*>(info->err);
  (*info->err->format_message)(info, trap->message);
  std::longjmp(trap->jump, 1);
}

// Warnings (level -1) are what libjpeg says when it papers over damage -- a
// truncated file, a corrupt entropy segment -- and goes on with grey filler.
// A damaged picture of a CT slice is refused, not segmented.
void jpeg_trap_warning(j_common_ptr info, int level) {
  if (level < 0) jpeg_trap_error(info);
}

struct DecodedJpeg {
  int width = 0, height = 0, channels = 0;
  unsigned char* pixels = nullptr;  // width * height * channels, malloc'ed: free() it
  char message[JMSG_LENGTH_MAX] = {};
};

// Grey JPEGs decode to one channel, colour ones (YCbCr, RGB) to RGB. False with
// result->message on any error or warning; then result->pixels is null.
bool decode_jpeg(const unsigned char* data, size_t size, int64_t max_pixels, DecodedJpeg* result) {
  jpeg_decompress_struct info;
  JpegErrorTrap trap;
  info.err = jpeg_std_error(&trap.manager);
  trap.manager.error_exit = jpeg_trap_error;
  trap.manager.emit_message = jpeg_trap_warning;
  if (setjmp(trap.jump)) {
    jpeg_destroy_decompress(&info);
    std::free(result->pixels);
    result->pixels = nullptr;
    std::memcpy(result->message, trap.message, sizeof trap.message);
    return false;
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, data, static_cast<unsigned long>(size));
  jpeg_read_header(&info, TRUE);
  const char* refusal = nullptr;
  if (info.num_components != 1 && info.num_components != 3) refusal = "CMYK and other 4-channel JPEGs are not read";
  else if (int64_t{info.image_width} * info.image_height > max_pixels) refusal = "too many pixels for a CT picture";
  if (refusal) {
    jpeg_destroy_decompress(&info);
    std::snprintf(result->message, sizeof result->message, "%s (%u x %u, %d channels)", refusal, info.image_width,
                  info.image_height, info.num_components);
    return false;
  }
  info.out_color_space = info.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&info);
  result->width = static_cast<int>(info.output_width);
  result->height = static_cast<int>(info.output_height);
  result->channels = info.output_components;
  const size_t stride = static_cast<size_t>(result->width) * static_cast<size_t>(result->channels);
  result->pixels = static_cast<unsigned char*>(std::malloc(stride * static_cast<size_t>(result->height)));
  if (!result->pixels) {
    jpeg_destroy_decompress(&info);
    std::snprintf(result->message, sizeof result->message, "out of memory");
    return false;
  }
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = result->pixels + stride * info.output_scanline;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return true;
}
}  // namespace

namespace covidrate::data {
namespace {

// Larger pictures are refused before they are decoded: a 400 KB PNG can claim
// 20000 x 20000 zero pixels and take 2 GB (checked). 8192 x 8192 is four times
// the largest CT matrix in use.
constexpr int64_t kMaxPicturePixels = int64_t{8192} * 8192;

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
  // Encoded in memory, then written through the one checked writer: stb's own
  // file writer ignores fwrite's and fclose's errors, which left truncated and
  // empty PNGs on a full disk with nothing said.
  std::string png;
  const auto append = [](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<size_t>(size));
  };
  const int ok = stbi_write_png_to_func(append, &png, static_cast<int>(width), static_cast<int>(height), channels,
                                        pixels, static_cast<int>(width * channels));
  CR_CHECK(ok && !png.empty(), path << ": cannot encode the PNG (out of memory?)");
  // Written beside the target and renamed, so no reader sees half a file.
  write_file_atomically(path, png);
}

}  // namespace

Volume read_image(const std::string& path) {
  const std::vector<unsigned char> bytes = read_file(path);
  CR_CHECK(bytes.size() <= static_cast<size_t>(std::numeric_limits<int>::max()), path << ": file too large");
  const bool png = is_png(bytes);
  const bool jpeg = bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF;
  CR_CHECK(png || jpeg, path << ": not a PNG or JPG file (its first bytes are neither signature)");
  int width = 0, height = 0, channels = 0;
  unsigned char* decoded = nullptr;
  if (png) {
    CR_CHECK(stbi_info_from_memory(bytes.data(), static_cast<int>(bytes.size()), &width, &height, &channels),
             path << ": cannot decode as PNG (" << stbi_failure_reason() << ")");
    CR_CHECK(int64_t{width} * height <= kMaxPicturePixels,
             path << ": cannot decode as PNG (too many pixels for a CT picture: " << width << " x " << height << ")");
    decoded = stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &width, &height, &channels, 0);
    CR_CHECK(decoded != nullptr, path << ": cannot decode as PNG (" << stbi_failure_reason() << ")");
  } else {
    DecodedJpeg jpg;
    CR_CHECK(decode_jpeg(bytes.data(), bytes.size(), kMaxPicturePixels, &jpg),
             path << ": cannot decode as JPG (" << jpg.message << ")");
    decoded = jpg.pixels, width = jpg.width, height = jpg.height, channels = jpg.channels;
  }
  const std::unique_ptr<unsigned char, void (*)(void*)> owner(decoded, std::free);  // stbi_image_free is free()

  Volume v;
  v.source = path;
  v.nx = width;
  v.ny = height;
  v.nz = 1;
  v.voxels.resize(static_cast<size_t>(v.voxel_count()));
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
