// covidrate_tile_png: puts colour PNGs side by side and shrinks the result, for
// the figures of docs/ (tools/dev/make_data_figures.sh). The covidrate commands
// draw one input's pictures; a figure that compares several inputs (sources,
// expert masks) needs them tiled, which no command of the product should do.
//
//   covidrate_tile_png --out OUT.png [--columns N] [--shrink K] IN.png...
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <stb_image.h>

#include "data/image2d.h"
#include "data/overlay.h"
#include "nn/error.h"

namespace {

using covidrate::data::RgbImage;

RgbImage read_rgb(const std::string& path) {
  int width = 0, height = 0, channels = 0;
  unsigned char* pixels = stbi_load(path.c_str(), &width, &height, &channels, 3);
  CR_CHECK(pixels != nullptr, path << ": cannot read as PNG or JPG (" << stbi_failure_reason() << ")");
  const std::unique_ptr<unsigned char, void (*)(void*)> owner(pixels, stbi_image_free);
  RgbImage image{width, height, std::vector<uint8_t>(pixels, pixels + size_t(width) * height * 3)};
  return image;
}

// Box average over k x k blocks (a partial block at the right or bottom edge is
// dropped), except that a block holding a coloured pixel takes the most coloured
// one: the outlines are one pixel wide and would fade to grey in an average.
RgbImage shrink(const RgbImage& in, int k) {
  if (k == 1) return in;
  constexpr int kColoured = 60;  // max - min channel above which a pixel is part of an outline
  RgbImage out{in.width / k, in.height / k, {}};
  out.rgb.resize(size_t(out.width) * out.height * 3);
  for (int64_t y = 0; y < out.height; ++y)
    for (int64_t x = 0; x < out.width; ++x) {
      int sum[3] = {0, 0, 0}, best_chroma = kColoured;
      const uint8_t* most_coloured = nullptr;
      for (int dy = 0; dy < k; ++dy)
        for (int dx = 0; dx < k; ++dx) {
          const uint8_t* p = &in.rgb[((y * k + dy) * in.width + x * k + dx) * 3];
          for (int c = 0; c < 3; ++c) sum[c] += p[c];
          const int chroma = std::max({p[0], p[1], p[2]}) - std::min({p[0], p[1], p[2]});
          if (chroma > best_chroma) best_chroma = chroma, most_coloured = p;
        }
      for (int c = 0; c < 3; ++c)
        out.rgb[(y * out.width + x) * 3 + c] =
            most_coloured ? most_coloured[c] : static_cast<uint8_t>((sum[c] + k * k / 2) / (k * k));
    }
  return out;
}

int run(int argc, char** argv) {
  std::string out;
  int columns = 0, k = 1;
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--out" || a == "--columns" || a == "--shrink") && i + 1 < argc) {
      const std::string value = argv[++i];
      if (a == "--out") out = value;
      else if (a == "--columns") columns = std::atoi(value.c_str());
      else k = std::atoi(value.c_str());
    } else if (!a.empty() && a[0] != '-') {
      inputs.push_back(a);
    } else {
      std::fprintf(stderr, "usage: covidrate_tile_png --out OUT.png [--columns N] [--shrink K] IN.png...\n");
      return 2;
    }
  }
  if (out.empty() || inputs.empty() || columns < 0 || k < 1) {
    std::fprintf(stderr, "usage: covidrate_tile_png --out OUT.png [--columns N] [--shrink K] IN.png...\n");
    return 2;
  }
  std::vector<RgbImage> tiles;
  for (const std::string& path : inputs) tiles.push_back(read_rgb(path));
  const RgbImage tiled = covidrate::data::montage(tiles, columns > 0 ? columns : static_cast<int>(tiles.size()));
  const RgbImage small = shrink(tiled, k);
  covidrate::data::write_png_rgb(out, small.rgb.data(), small.width, small.height);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "covidrate_tile_png: %s\n", e.what());
    return 1;
  }
}
