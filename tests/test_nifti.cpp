// NIfTI reader and writer: round trips keep geometry and voxels for every
// written type and both file forms; the nibabel samples (big-endian, NIfTI-2,
// 4-D, scaled) and real masks read; broken files fail naming the file.
#include <doctest/doctest.h>

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <cstring>
#include <string>

#include "data/parallel_deflate.h"
#include "data/nifti.h"
#include "data/read_any.h"
#include "nn/error.h"
#include "tests/support/test_support.h"
#include "tests/support/volume_checks.h"
#include "tests/temp_files.h"

using namespace covidrate;
using namespace covidrate::data;

namespace {

std::string samples() { return test::data_dir() + "/nifti-samples/"; }

// An oblique, anisotropic grid: rotated 30° about z and 10° about x, with a
// non-zero origin, so any sign or axis mix-up in RAS <-> LPS shows.
Volume oblique_volume(bool left_handed) {
  Volume v;
  v.nx = 7, v.ny = 5, v.nz = 3;
  const double a = M_PI / 6, b = M_PI / 18;
  v.row_dir = {std::cos(a), std::sin(a), 0};
  v.col_dir = {-std::sin(a) * std::cos(b), std::cos(a) * std::cos(b), std::sin(b)};
  v.slice_dir = {std::sin(a) * std::sin(b), -std::cos(a) * std::sin(b), std::cos(b)};
  if (left_handed)
    for (double& x : v.slice_dir) x = -x;
  v.spacing = {0.7, 0.8, 2.5};
  v.origin = {-120.5, 33.25, -310};
  v.voxels.resize(static_cast<size_t>(v.voxel_count()));
  for (size_t k = 0; k < v.voxels.size(); ++k) v.voxels[k] = static_cast<float>(k % 200) - 20.0f + 0.25f;
  return v;
}

// The stored value of x for each written type.
float stored(float x, NiftiType type) {
  if (type == NiftiType::UInt8) return std::clamp(std::nearbyint(x), 0.0f, 255.0f);
  if (type == NiftiType::Int16) return std::nearbyint(x);
  return x;
}

void check_fails(const std::string& path, const std::string& cause = "") {
  try {
    read_nifti(path);
    FAIL("reading " << path << " did not throw");
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK_MESSAGE(message.find(path) != std::string::npos, message);
    CHECK_MESSAGE(message.find(cause) != std::string::npos, message);
  }
}

std::vector<char> gunzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  REQUIRE(f);
  std::vector<char> out;
  char buffer[65536];
  int n;
  while ((n = gzread(f, buffer, sizeof buffer)) > 0) out.insert(out.end(), buffer, buffer + n);
  gzclose(f);
  return out;
}

}  // namespace

TEST_CASE("NIfTI round trip keeps geometry and voxels: uint8, int16, float32; .nii and .nii.gz") {
  test::TempDir dir;
  for (const bool left_handed : {false, true}) {
    const Volume v = oblique_volume(left_handed);
    for (const auto type : {NiftiType::UInt8, NiftiType::Int16, NiftiType::Float32}) {
      for (const char* extension : {".nii", ".nii.gz"}) {
        const std::string path = dir.file(std::to_string(int(type)) + extension);
        CAPTURE(path);
        CAPTURE(left_handed);
        write_nifti(path, v, type);
        const Volume back = read_nifti(path);
        test::check_same_geometry(back, v);
        CHECK(back.warnings.empty());  // a real placement in the patient: nothing to say
        bool same = true;
        for (size_t k = 0; k < v.voxels.size(); ++k) same = same && back.voxels[k] == stored(v.voxels[k], type);
        CHECK(same);
        // Only the file itself is left behind: the temporary was renamed.
        CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), {}) >= 1);
        for (const auto& e : std::filesystem::directory_iterator(dir.path()))
          CHECK(e.path().string().find(".tmp-") == std::string::npos);
      }
    }
  }
}

TEST_CASE("NIfTI: a mask on an input's grid gets the input's qform and sform as they were, even when they disagree") {
  test::TempDir dir;
  const std::string input = dir.file("ct.nii");
  write_nifti(input, oblique_volume(false), NiftiType::Int16);
  // A qform that disagrees with the sform (a tool updated one and not the other), other codes, other units.
  std::vector<char> bytes = test::read_bytes(input);
  const auto put16 = [&](size_t at, int16_t v) { std::memcpy(bytes.data() + at, &v, 2); };
  const auto put32f = [&](size_t at, float v) { std::memcpy(bytes.data() + at, &v, 4); };
  put16(252, 2);                                    // qform_code: aligned
  put16(254, 3);                                    // sform_code: Talairach
  put32f(256, 0.0f), put32f(260, 1.0f), put32f(264, 0.0f);  // quatern: 180 degrees about y
  put32f(268, 99.5f);                                // qoffset x
  put32f(76, -1.0f);                                // qfac
  put32f(80, 0.75f);                                // pixdim[1], not the sform's 0.7
  bytes[123] = 2;                                   // xyzt_units: mm only
  test::write_bytes(input, bytes);

  const Volume ct = read_nifti(input);  // geometry from the sform
  REQUIRE(ct.nifti_source);
  LabelVolume mask;
  static_cast<VolumeGrid&>(mask) = ct;
  mask.voxels.assign(static_cast<size_t>(mask.voxel_count()), 1);
  const std::string written = dir.file("mask.nii");
  write_nifti(written, mask);
  const std::vector<char> out = test::read_bytes(written);
  const auto same_bytes = [&](size_t from, size_t to) {
    return std::equal(bytes.begin() + from, bytes.begin() + to, out.begin() + from);
  };
  CHECK(same_bytes(76, 92));    // qfac and the voxel sizes
  CHECK(same_bytes(123, 124));  // units
  CHECK(same_bytes(252, 328));  // codes, quaternion, offset, sform
  CHECK(out[70] == 2);          // its own datatype: uint8
  test::check_same_geometry(read_nifti(written), ct);

  // Another grid (the axes permuted): the header is made from the grid, as for any other volume.
  LabelVolume other = mask;
  std::swap(other.nx, other.ny);
  std::swap(other.row_dir, other.col_dir);
  std::swap(other.spacing[0], other.spacing[1]);
  write_nifti(written, other);
  const std::vector<char> computed = test::read_bytes(written);
  int16_t qform_code = 0, sform_code = 0;
  std::memcpy(&qform_code, computed.data() + 252, 2);
  std::memcpy(&sform_code, computed.data() + 254, 2);
  CHECK(qform_code == 1);
  CHECK(sform_code == 1);
  test::check_same_geometry(read_nifti(written), other);
}

TEST_CASE("NIfTI: a label volume of bytes writes the same file as its floats, in every type") {
  // segment keeps its lung and lesion masks as bytes (LabelVolume); the file
  // must not tell which one it came from.
  test::TempDir dir;
  Volume floats = oblique_volume(false);
  LabelVolume bytes = same_grid<uint8_t>(floats, Intensity::Label);
  for (size_t k = 0; k < floats.voxels.size(); ++k) {
    bytes.voxels[k] = static_cast<uint8_t>((k * 37) % 256);
    floats.voxels[k] = bytes.voxels[k];
  }
  floats.intensity = Intensity::Label;
  for (const auto type : {NiftiType::UInt8, NiftiType::Int16, NiftiType::Float32}) {
    CAPTURE(int(type));
    write_nifti(dir.file("f.nii"), floats, type);
    write_nifti(dir.file("b.nii"), bytes, type);
    CHECK(test::read_bytes(dir.file("b.nii")) == test::read_bytes(dir.file("f.nii")));
    const Volume back = read_nifti(dir.file("b.nii"));
    test::check_same_geometry(back, floats);
    CHECK(back.voxels == floats.voxels);
  }
  CHECK(to_float(bytes).voxels == floats.voxels);
}

TEST_CASE("NIfTI integer output rounds like std::nearbyint, clamps to the type, and writes 0 for NaN and infinities") {
  test::TempDir dir;
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> values = {0.5f,  1.5f,    2.5f,   -0.5f,  -1.5f, 254.5f, 254.51f, 255.5f, 300.f,  -3.f,
                                     nan,   inf,     -inf,   1e30f,  -1e30f, 0.49999997f, 32766.5f, 32767.5f,
                                     -32768.5f, -40000.f, 12345.678f, 4194303.5f, 8388609.f};
  Volume v;
  v.nx = static_cast<int64_t>(values.size());
  v.ny = v.nz = 1;
  v.voxels = values;
  for (const auto type : {NiftiType::UInt8, NiftiType::Int16}) {
    const std::string path = dir.file(type == NiftiType::UInt8 ? "u8.nii" : "i16.nii");
    write_nifti(path, v, type);
    const Volume back = read_nifti(path);
    const float lo = type == NiftiType::UInt8 ? 0.f : -32768.f, hi = type == NiftiType::UInt8 ? 255.f : 32767.f;
    for (size_t k = 0; k < values.size(); ++k) {
      CAPTURE(values[k]);
      const float x = values[k];
      const float want = std::isfinite(x) ? std::nearbyint(std::clamp(x, lo, hi)) : 0.f;
      CHECK(back.voxels[k] == want);
    }
  }
}

TEST_CASE("NIfTI .gz output is gzip, .nii is not") {
  test::TempDir dir;
  const Volume v = oblique_volume(false);
  write_nifti(dir.file("a.nii.gz"), v, NiftiType::UInt8);
  write_nifti(dir.file("a.nii"), v, NiftiType::UInt8);
  const auto gz = test::read_bytes(dir.file("a.nii.gz"));
  const auto raw = test::read_bytes(dir.file("a.nii"));
  CHECK(static_cast<unsigned char>(gz[0]) == 0x1f);
  CHECK(static_cast<unsigned char>(gz[1]) == 0x8b);
  CHECK(raw.size() == 352 + size_t(v.voxel_count()));
  CHECK(std::memcmp(raw.data() + 344, "n+1", 4) == 0);
}

// The whole of a gzip file inflated as ONE member (RFC 1952: what every reader
// accepts): the member must end exactly at the end of the file.
static std::vector<char> inflate_one_member(const std::vector<char>& file) {
  z_stream z{};
  REQUIRE(inflateInit2(&z, 16 + MAX_WBITS) == Z_OK);  // 16: a gzip wrapper, its CRC and length checked
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(file.data()));
  z.avail_in = static_cast<uInt>(file.size());
  std::vector<char> out;
  char buffer[1 << 16];
  int ret = Z_OK;
  while (ret == Z_OK) {
    z.next_out = reinterpret_cast<Bytef*>(buffer);
    z.avail_out = sizeof buffer;
    ret = inflate(&z, Z_NO_FLUSH);
    out.insert(out.end(), buffer, buffer + (sizeof buffer - z.avail_out));
  }
  CHECK(ret == Z_STREAM_END);
  CHECK(z.avail_in == 0);  // nothing after the member
  inflateEnd(&z);
  return out;
}

TEST_CASE("GzipWriter: blocks deflated in parallel make one gzip member with the bytes written") {
  test::TempDir dir;
  constexpr size_t kBlock = kDeflateBlockBytes, kGroup = GzipWriter::kGroupBlocks * kBlock;
  std::mt19937 rng(5);
  // A random 20 KB pattern repeated: matches that reach back across every
  // block cut. "Sprinkled" changes about one byte in 97 at random.
  std::vector<char> pattern(20000);
  for (char& c : pattern) c = static_cast<char>(rng());
  for (const bool sprinkled : {false, true}) {
    for (const size_t size : {size_t{0}, size_t{1}, size_t{32767}, size_t{32768}, kBlock - 1, kBlock, kBlock + 1,
                              kGroup, kGroup + 1, 2 * kGroup + 12345}) {
      CAPTURE(sprinkled);
      CAPTURE(size);
      std::vector<char> data(size);
      for (size_t i = 0; i < size; ++i)
        data[i] = sprinkled && rng() % 97 == 0 ? static_cast<char>(rng()) : pattern[i % pattern.size()];
      const std::string path = dir.file("t.gz");
      std::FILE* f = std::fopen(path.c_str(), "wb");
      REQUIRE(f);
      {
        GzipWriter gz(f, 1);
        for (size_t at = 0; at < size;) {  // pieces of random length, as a caller streams them
          const size_t n = std::min<size_t>(size - at, 1 + rng() % (3 * kBlock));
          REQUIRE(gz.write(data.data() + at, n));
          at += n;
        }
        REQUIRE(gz.finish());
      }
      REQUIRE(std::fclose(f) == 0);
      const std::vector<char> file = test::read_bytes(path);
      CHECK(inflate_one_member(file) == data);
      // Each block is primed with the 32 KiB before it: without that, every
      // block would spell the 20 KB pattern out again (640 KB a group). Primed,
      // all but the first period are matches of at most 258 bytes, a few bytes each.
      if (!sprinkled && size > kGroup) CHECK(file.size() < size / 258 * 4 + 2 * pattern.size());
    }
  }
}

TEST_CASE("GzipWriter reports a failed write (a full disk) instead of a complete-looking file") {
  std::FILE* f = std::fopen("/dev/full", "wb");  // every write fails with ENOSPC once flushed
  if (!f) {
    MESSAGE("no /dev/full here");
    return;
  }
  std::vector<char> data(3 * GzipWriter::kGroupBlocks * kDeflateBlockBytes, 'x');
  bool ok;
  {
    GzipWriter gz(f, 1);
    ok = gz.write(data.data(), data.size());  // its compressed groups overflow stdio's buffer
    ok = gz.finish() && ok;
  }
  std::fclose(f);
  CHECK_FALSE(ok);  // the writer itself saw it, not only the final fclose
}

TEST_CASE("zlib_compress (the PNGs' deflate, in parallel blocks) is a zlib stream of the data") {
  std::mt19937 rng(9);
  for (const size_t size : {size_t{0}, size_t{1}, size_t{40000}, kDeflateBlockBytes, 5 * kDeflateBlockBytes + 7}) {
    for (const int level : {1, 6, 9}) {
      CAPTURE(size);
      CAPTURE(level);
      std::vector<char> data(size);
      for (size_t i = 0; i < size; ++i) data[i] = static_cast<char>(i % 1000 < 500 ? rng() % 4 : rng());
      const std::vector<unsigned char> z = zlib_compress(data.data(), size, level);
      REQUIRE(z.size() >= 6);
      CHECK((z[0] * 256 + z[1]) % 31 == 0);  // the header's check bits
      std::vector<char> back(size + 1);
      uLongf back_size = static_cast<uLongf>(back.size());
      // uncompress checks the header, that the stream ends, and the Adler-32.
      CHECK(uncompress(reinterpret_cast<Bytef*>(back.data()), &back_size, z.data(), static_cast<uLong>(z.size())) == Z_OK);
      back.resize(back_size);
      CHECK(back == data);
    }
  }
}

TEST_CASE("NIfTI real lesion mask: 512x512 masks read as labels and round-trip exactly") {
  const std::string path = samples() + "mosmed-lesion-masks/study_0255_mask.nii.gz";
  const Volume v = read_nifti(path);
  CHECK(v.nx == 512);
  CHECK(v.ny == 512);
  CHECK(v.nz == 38);
  CHECK(v.spacing[2] == doctest::Approx(8.0));
  CHECK(v.intensity == Intensity::Label);
  CHECK(*std::max_element(v.voxels.begin(), v.voxels.end()) == 1.0f);
  test::TempDir dir;
  write_nifti(dir.file("m.nii.gz"), v, NiftiType::UInt8);
  const Volume back = read_nifti(dir.file("m.nii.gz"));
  test::check_same_geometry(back, v);
  CHECK(back.voxels == v.voxels);
}

TEST_CASE("NIfTI CT slice with its lung mask: HU and labels on the same grid") {
  const std::string base = test::data_dir() + "/lung-masks-zenodo/coronacases_001_slice_110_";
  const Volume ct = read_any(base + "ct.nii.gz");
  const Volume lungs = read_any(base + "lungs.nii.gz");
  CHECK(ct.intensity == Intensity::HounsfieldUnits);
  CHECK(lungs.intensity == Intensity::Label);
  test::check_same_geometry(ct, lungs);
  CHECK(*std::min_element(ct.voxels.begin(), ct.voxels.end()) < -900.0f);
  CHECK(*std::max_element(lungs.voxels.begin(), lungs.voxels.end()) == 2.0f);
  // Lung voxels are mostly air-filled.
  double sum = 0;
  int64_t count = 0;
  for (size_t k = 0; k < ct.voxels.size(); ++k)
    if (lungs.voxels[k] > 0) sum += ct.voxels[k], ++count;
  REQUIRE(count > 1000);
  CHECK(sum / double(count) < -500);
  // Its header is a placeholder (identity sform, origin 0; the slice is mirrored against its anatomy):
  // the sides follow the voxel order, and the reader says so.
  REQUIRE(ct.warnings.size() == 1);
  CHECK(ct.warnings[0] == base + "ct.nii.gz: the NIfTI header does not place the image in the patient (an "
                                 "axis-aligned sform with its origin at 0), so left and right follow the voxel order "
                                 "and may be swapped");
}

TEST_CASE("NIfTI big-endian, NIfTI-2, 4-D and scaled samples") {
  const Volume big = read_nifti(samples() + "anatomical.nii");
  CHECK(big.nx == 33);
  CHECK(big.ny == 41);
  CHECK(big.nz == 25);
  CHECK(big.description.find("big-endian") != std::string::npos);
  // Checked against an independent decode of the int16 big-endian data.
  CHECK(*std::min_element(big.voxels.begin(), big.voxels.end()) == -610.0f);
  CHECK(*std::max_element(big.voxels.begin(), big.voxels.end()) == 30393.0f);

  // example4d and example_nifti2 share their affine (nibabel's test data):
  // diag(-2, 2, 2.2) rotated about x, offset (117.86, -35.72, -7.25) in RAS.
  const Volume four_d = read_nifti(samples() + "example4d.nii.gz");
  const Volume two = read_nifti(samples() + "example_nifti2.nii.gz");
  CHECK(four_d.nx == 128);
  CHECK(four_d.nz == 24);
  CHECK(four_d.description.find("only the first is read") != std::string::npos);
  CHECK(four_d.volumes_in_file == 2);  // 128 x 96 x 24 x 2 (what the pipelines refuse: test_input_domain)
  CHECK(two.nx == 32);
  CHECK(two.ny == 20);
  CHECK(two.nz == 12);
  CHECK(two.description.find("NIfTI-2") != std::string::npos);
  CHECK(two.volumes_in_file == 2);  // 32 x 20 x 12 x 2
  for (const Volume* v : {&four_d, &two}) {
    CHECK(v->origin[0] == doctest::Approx(-117.855).epsilon(1e-4));  // LPS: x and y flipped
    CHECK(v->origin[1] == doctest::Approx(35.7229).epsilon(1e-4));
    CHECK(v->origin[2] == doctest::Approx(-7.2488).epsilon(1e-4));
    CHECK(v->row_dir[0] == doctest::Approx(1.0));
    CHECK(v->spacing[2] == doctest::Approx(2.2).epsilon(1e-4));
    CHECK(v->col_dir[2] == doctest::Approx(0.161604).epsilon(1e-4));
  }

  // functional.nii is stored as int16 with scl_slope/scl_inter.
  const Volume scaled = read_nifti(samples() + "functional.nii");
  CHECK(scaled.description.find("scaled") != std::string::npos);
  CHECK(*std::min_element(scaled.voxels.begin(), scaled.voxels.end()) == doctest::Approx(762.542).epsilon(1e-4));
}

TEST_CASE("NIfTI broken files fail with an error naming the file") {
  test::TempDir dir;
  const std::vector<char> plain = test::read_bytes(samples() + "anatomical.nii");
  for (size_t size : {size_t{0}, size_t{4}, size_t{200}, size_t{348}, size_t{352}, plain.size() / 2, plain.size() - 1}) {
    CAPTURE(size);
    const std::string file = dir.file("cut" + std::to_string(size) + ".nii");
    test::write_bytes(file, std::vector<char>(plain.begin(), plain.begin() + static_cast<std::ptrdiff_t>(size)));
    check_fails(file);
  }
  // A gzip stream cut short.
  const std::vector<char> gz = test::read_bytes(samples() + "mosmed-lesion-masks/study_0255_mask.nii.gz");
  const std::string cut_gz = dir.file("cut.nii.gz");
  test::write_bytes(cut_gz, std::vector<char>(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2)));
  check_fails(cut_gz);
  const std::string noise = dir.file("noise.nii");
  test::write_bytes(noise, test::garbage(4000, 11));
  check_fails(noise, "not a NIfTI");

  // Headers that lie: absurd sizes, a bad rank, an unknown datatype.
  const std::vector<char> header = gunzip(samples() + "standard.nii.gz");
  const auto patched = [&](const char* name, size_t offset, std::vector<int16_t> values) {
    std::vector<char> bytes = header;
    std::memcpy(bytes.data() + offset, values.data(), values.size() * 2);
    const std::string file = dir.file(name);
    test::write_bytes(file, bytes);
    return file;
  };
  check_fails(patched("huge.nii", 40, {3, 32767, 32767, 32767}), "more than the limit");
  check_fails(patched("big.nii", 40, {3, 2000, 2000, 500}), "truncated");  // 2e9 voxels claimed, none there
  check_fails(patched("rank.nii", 40, {9}), "dim[0]");
  check_fails(patched("negative.nii", 40, {3, -4, 5, 7}), "dim[1]");
  check_fails(patched("type.nii", 70, {128}), "datatype 128");
  check_fails(patched("nan-offset.nii", 108, {-1, -1}), "vox_offset");  // a NaN float (found by fuzz_nifti)
  check_fails(patched("small-offset.nii", 108, {0, 0x4300}), "vox_offset");  // 128.0 < 352
  check_fails(dir.file("missing.nii"), "cannot open");

  // NaN or infinite voxels are refused, not replaced (they used to read as 0 HU,
  // soft tissue, and quietly shrank the lungs).
  // (The writer stores 0 for them, so the file is patched: a marker value's
  // four bytes replaced.)
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    Volume v = oblique_volume(false);
    const float marker = 12345.678f;
    v.voxels[5] = marker;
    const std::string file = dir.file("not-finite.nii");
    write_nifti(file, v, NiftiType::Float32);
    std::vector<char> bytes = test::read_bytes(file);
    const char* m = reinterpret_cast<const char*>(&marker);
    const auto at = std::search(bytes.begin(), bytes.end(), m, m + 4);
    REQUIRE(at != bytes.end());
    std::memcpy(&*at, &bad, 4);
    test::write_bytes(file, bytes);
    check_fails(file, "1 of " + std::to_string(v.voxel_count()) + " voxels are NaN or infinite");
  }
}

TEST_CASE("NIfTI writer rejects what NIfTI-1 cannot hold and unwritable paths") {
  Volume v = oblique_volume(false);
  CHECK_THROWS_AS(write_nifti("/nonexistent-folder/x.nii", v, NiftiType::UInt8), Error);
  v.voxels.pop_back();
  CHECK_THROWS_AS(write_nifti("/tmp/never-written.nii", v, NiftiType::UInt8), Error);
  CHECK(!std::filesystem::exists("/tmp/never-written.nii"));
}
