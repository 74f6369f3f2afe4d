// PNG/JPG reading (MedSeg pictures, binary and palette masks), PNG writing,
// read_any's dispatch, and broken pictures failing with the file's name.
#include <doctest/doctest.h>
#include <zlib.h>

#include <algorithm>
#include <string>
#include <vector>

#include "data/image2d.h"
#include "data/read_any.h"
#include "nn/error.h"
#include "tests/support/test_support.h"
#include "tests/temp_files.h"

using namespace covidrate;
using namespace covidrate::data;

namespace {

std::string train() { return test::data_dir() + "/medseg-semiseg/train/"; }

// Reading `path` throws an Error that names the file (and says `cause`).
void check_fails(const std::string& path, const std::string& cause = "") {
  try {
    read_image(path);
    FAIL("reading " << path << " did not throw");
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK_MESSAGE(message.find(path) != std::string::npos, message);
    CHECK_MESSAGE(message.find(cause) != std::string::npos, message);
  }
}

}  // namespace

TEST_CASE("MedSeg JPG slice, binary mask and palette mask read on one grid") {
  const Volume picture = read_image(train() + "images/0.jpg");
  const Volume mask = read_image(train() + "masks/0.png");
  const Volume classes = read_image(train() + "masks-multiclass/0.png");
  for (const Volume* v : {&picture, &mask, &classes}) {
    CHECK(v->nx == 273);
    CHECK(v->ny == 369);
    CHECK(v->nz == 1);
  }
  CHECK(picture.intensity == Intensity::Picture8Bit);
  const auto [lo, hi] = std::minmax_element(picture.voxels.begin(), picture.voxels.end());
  CHECK(*lo >= 0.0f);
  CHECK(*hi <= 255.0f);
  CHECK(*hi - *lo > 100.0f);

  // Binary mask: 255 becomes 1. Palette mask: indices 0 (background), 1 (ground
  // glass), 2 (consolidation), and lesion wherever the binary mask says so.
  CHECK(mask.intensity == Intensity::Label);
  CHECK(classes.intensity == Intensity::Label);
  int64_t lesion = 0, agree = 0;
  bool only_known_labels = true, binary = true;
  for (size_t k = 0; k < mask.voxels.size(); ++k) {
    only_known_labels = only_known_labels && (classes.voxels[k] == 0 || classes.voxels[k] == 1 || classes.voxels[k] == 2);
    binary = binary && (mask.voxels[k] == 0 || mask.voxels[k] == 1);
    lesion += mask.voxels[k] > 0;
    agree += (mask.voxels[k] > 0) == (classes.voxels[k] > 0);
  }
  CHECK(only_known_labels);
  CHECK(binary);
  CHECK(lesion > 100);
  CHECK(double(agree) / double(mask.voxels.size()) > 0.99);
}

TEST_CASE("Every MedSeg training pair reads: picture and masks of the same size") {
  int pairs = 0;
  for (const auto& entry : std::filesystem::directory_iterator(train() + "images")) {
    const std::string stem = entry.path().stem().string();
    const Volume picture = read_image(entry.path().string());
    const Volume mask = read_image(train() + "masks/" + stem + ".png");
    CHECK(mask.nx == picture.nx);
    CHECK(mask.ny == picture.ny);
    CHECK(mask.intensity == Intensity::Label);
    ++pairs;
  }
  CHECK(pairs == 50);
}

TEST_CASE("PNG writers round-trip gray and RGB pixels") {
  test::TempDir dir;
  const int64_t w = 37, h = 11;
  std::vector<uint8_t> gray(w * h), rgb(w * h * 3);
  for (int64_t i = 0; i < w * h; ++i) {
    gray[i] = static_cast<uint8_t>((i * 7) % 256);
    rgb[3 * i] = static_cast<uint8_t>(i % 256), rgb[3 * i + 1] = 30, rgb[3 * i + 2] = static_cast<uint8_t>(255 - i % 256);
  }
  write_png_gray(dir.file("g.png"), gray.data(), w, h);
  const Volume g = read_image(dir.file("g.png"));
  CHECK(g.nx == w);
  CHECK(g.ny == h);
  CHECK(g.intensity == Intensity::Picture8Bit);
  bool same = true;
  for (int64_t i = 0; i < w * h; ++i) same = same && g.voxels[i] == gray[i];
  CHECK(same);

  write_png_rgb(dir.file("c.png"), rgb.data(), w, h);
  const Volume c = read_image(dir.file("c.png"));
  bool averaged = true;
  for (int64_t i = 0; i < w * h; ++i)
    averaged = averaged && c.voxels[i] == doctest::Approx((rgb[3 * i] + rgb[3 * i + 1] + rgb[3 * i + 2]) / 3.0);
  CHECK(averaged);

  CHECK_THROWS_AS(write_png_gray(dir.file("none.png"), gray.data(), 0, h), Error);
  CHECK_THROWS_AS(write_png_gray("/nonexistent-folder/x.png", gray.data(), w, h), Error);
}

TEST_CASE("read_any dispatches by content and name") {
  CHECK(input_kind(train() + "images/0.jpg") == InputKind::Picture);
  CHECK(input_kind(test::data_dir() + "/nifti-samples/anatomical.nii") == InputKind::Nifti);
  CHECK(input_kind(test::data_dir() + "/dicom-samples/CT_small.dcm") == InputKind::DicomSeries);
  CHECK(input_kind(test::data_dir() + "/ct-lungdx") == InputKind::DicomSeries);
  CHECK(read_any(train() + "masks/1.png").intensity == Intensity::Label);
  test::TempDir dir;
  const std::string text = dir.file("notes.txt");
  test::write_bytes(text, std::vector<char>{'h', 'e', 'l', 'l', 'o', '\n', 'x', 'y', 'z', '\n'});
  CHECK(input_kind(text) == InputKind::Unknown);
  CHECK_THROWS_WITH_AS(read_any(text), doctest::Contains("notes.txt"), Error);
  CHECK_THROWS_WITH_AS(read_any(dir.file("absent.png")), doctest::Contains("no such file"), Error);
  // Named as a picture but empty, or something else renamed: a picture that
  // fails to read (a folder of slices must not silently lack it).
  for (const char* name : {"empty.jpg", "notes.PNG", "scan.jpeg"}) {
    const std::string file = dir.file(name);
    test::write_bytes(file, name[0] == 'e' ? std::vector<char>{} : std::vector<char>{'h', 'i', '\n'});
    CHECK_MESSAGE(input_kind(file) == InputKind::Picture, name);
    CHECK_THROWS_WITH_AS(read_any(file), doctest::Contains(file.c_str()), Error);
  }
}

TEST_CASE("Broken pictures fail with the file's name") {
  test::TempDir dir;
  for (const char* name : {"masks/0.png", "images/0.jpg"}) {
    const std::vector<char> bytes = test::read_bytes(train() + name);
    for (size_t size : {size_t{0}, size_t{8}, size_t{40}, bytes.size() / 3}) {
      const std::string file = dir.file("cut" + std::to_string(size) + (name[0] == 'm' ? ".png" : ".jpg"));
      test::write_bytes(file, std::vector<char>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(size)));
      // A JPEG cut after its header used to decode as a partly grey picture
      // (stb, and libjpeg with its "premature end" warning); warnings are
      // errors now. The PNG checksum and stream end catch truncation there.
      check_fails(file);
    }
  }
  const std::string noise = dir.file("noise.png");
  test::write_bytes(noise, test::garbage(3000, 5));
  check_fails(noise);
}

TEST_CASE("Damaged JPEGs that broke stb_image are refused cleanly by libjpeg-turbo") {
  // Found by fuzz/fuzz_image.cpp in 300 inputs: a Huffman table whose code
  // counts add up past 256. stb_image wrote past its 257-byte array
  // (AddressSanitizer/UBSan in the fuzz build); libjpeg-turbo names the fault.
  check_fails(test::source_dir() + "/fuzz/corpus/image/regression-huffman-counts-past-256.jpg",
              "cannot decode as JPG");

  // A corrupt entropy segment inside an otherwise whole file: libjpeg would
  // warn and fill the rest grey; that picture must not reach the network.
  test::TempDir dir;
  std::vector<char> bytes = test::read_bytes(train() + "images/0.jpg");
  for (size_t k = bytes.size() / 2; k < bytes.size() / 2 + 64; ++k) bytes[k] = static_cast<char>(0xFF);
  const std::string damaged = dir.file("damaged.jpg");
  test::write_bytes(damaged, bytes);
  check_fails(damaged);

  // What is neither a PNG nor a JPG says so.
  const std::string other = dir.file("picture.png");
  test::write_bytes(other, std::vector<char>{'G', 'I', 'F', '8', '9', 'a', 0, 0});
  check_fails(other, "not a PNG or JPG");
}

TEST_CASE("Pictures too large for a CT slice are refused before they are decoded") {
  // 20000 x 20000 PNG of zeros: a few hundred kilobytes that would decode to
  // 400 MB of pixels (and 1.6 GB of floats).
  test::TempDir dir;
  const std::string path = dir.file("huge.png");
  std::vector<uint8_t> row(20000, 0);
  write_png_gray(path, row.data(), 20000, 1);  // a valid header to patch
  std::vector<char> bytes = test::read_bytes(path);
  // IHDR's height is bytes 20..23 (big-endian); its CRC (of type and data,
  // bytes 12..28) follows at 29, so the header stays valid.
  bytes[20] = 0, bytes[21] = 0, bytes[22] = 0x4E, bytes[23] = 0x20;  // 20000
  const uLong crc = crc32(0, reinterpret_cast<const Bytef*>(bytes.data() + 12), 17);
  for (int k = 0; k < 4; ++k) bytes[29 + k] = static_cast<char>((crc >> (24 - 8 * k)) & 0xFF);
  test::write_bytes(path, bytes);
  check_fails(path, "too many pixels");
}
