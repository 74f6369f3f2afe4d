// DICOM reader on the real samples (every transfer syntax we were given, three
// CT series) and on broken copies of them, which must fail with an Error that
// names the file.
#include <doctest/doctest.h>
#include <gdcmAttribute.h>
#include <gdcmReader.h>
#include <gdcmWriter.h>

#include <algorithm>
#include <numeric>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>

#include "data/dicom.h"
#include "data/read_any.h"
#include "nn/error.h"
#include "tests/support/test_support.h"
#include "tests/temp_files.h"

using namespace covidrate;
using namespace covidrate::data;

namespace {

std::string samples() { return test::data_dir() + "/dicom-samples/"; }

double fraction_in(const Volume& v, float lo, float hi) {
  const auto n = std::count_if(v.voxels.begin(), v.voxels.end(), [&](float x) { return x >= lo && x <= hi; });
  return static_cast<double>(n) / static_cast<double>(v.voxels.size());
}

// A chest CT in HU: clamped at -1024 (air, and padding outside the field of
// view), with lungs/air and soft tissue both well represented.
void check_chest_ct(const Volume& v) {
  CHECK(v.intensity == Intensity::HounsfieldUnits);
  CHECK(*std::min_element(v.voxels.begin(), v.voxels.end()) == -1024.0f);
  CHECK(*std::max_element(v.voxels.begin(), v.voxels.end()) < 4000.0f);
  CHECK(fraction_in(v, -1024, -900) > 0.15);  // air outside the body and in the lungs
  CHECK(fraction_in(v, -100, 100) > 0.05);    // muscle, blood, organs (fat is below -100)
}

// Copies a DICOM file, changing its data set on the way.
void rewrite(const std::string& from, const std::string& to, const std::function<void(gdcm::DataSet&)>& edit) {
  gdcm::Reader reader;
  reader.SetFileName(from.c_str());
  REQUIRE(reader.Read());
  edit(reader.GetFile().GetDataSet());
  gdcm::Writer writer;
  writer.SetFile(reader.GetFile());
  writer.SetFileName(to.c_str());
  REQUIRE(writer.Write());
}

template <uint16_t G, uint16_t E, typename V>
void set(gdcm::DataSet& ds, const V& value) {
  gdcm::Attribute<G, E> attribute;
  attribute.SetValue(value);
  ds.Replace(attribute.GetAsDataElement());
}

// A multi-valued code string, e.g. ImageType "DERIVED\\SECONDARY\\MIP" (an
// Attribute of variable multiplicity takes an array, not one string).
void set_code_string(gdcm::DataSet& ds, uint16_t group, uint16_t element, std::string value) {
  if (value.size() % 2) value += ' ';  // DICOM values have even lengths
  gdcm::DataElement de(gdcm::Tag(group, element));
  de.SetVR(gdcm::VR::CS);
  de.SetByteValue(value.data(), static_cast<uint32_t>(value.size()));
  ds.Replace(de);
}

void set_position(gdcm::DataSet& ds, double z) {
  gdcm::Attribute<0x0020, 0x0032> position = {{0.0, 0.0, z}};
  ds.Replace(position.GetAsDataElement());
}

// Reading `path` throws a covidrate::Error whose message names `file` and
// contains `cause`.
// A copy of `source` in `dir` named `name`, with bytes replaced relative to the
// first occurrence of `marker` (which must be there): {offset from the marker, new byte}.
std::string patched_copy(const test::TempDir& dir, const std::string& source, const std::string& marker,
                         const std::vector<std::pair<size_t, char>>& changes, const std::string& name) {
  std::vector<char> bytes = test::read_bytes(source);
  const auto at = std::search(bytes.begin(), bytes.end(), marker.begin(), marker.end());
  REQUIRE_MESSAGE(at != bytes.end(), source << " lacks the marker");
  for (const auto& [offset, value] : changes) at[static_cast<std::ptrdiff_t>(offset)] = value;
  const std::string file = dir.file(name);
  test::write_bytes(file, bytes);
  return file;
}

void check_fails(const std::string& path, const std::string& file, const std::string& cause = "") {
  try {
    read_dicom_series(path);
    FAIL("reading " << path << " did not throw");
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK_MESSAGE(message.find(file) != std::string::npos, message);
    CHECK_MESSAGE(message.find(cause) != std::string::npos, message);
  }
}

}  // namespace

TEST_CASE("DICOM CT_small: one uncompressed CT slice in HU with its geometry") {
  const Volume v = read_dicom_series(samples() + "CT_small.dcm");
  CHECK(v.nx == 128);
  CHECK(v.ny == 128);
  CHECK(v.nz == 1);
  CHECK(v.intensity == Intensity::HounsfieldUnits);
  CHECK(v.spacing[0] == doctest::Approx(0.661468));
  CHECK(v.spacing[2] == doctest::Approx(5.0));  // SliceThickness, the only hint for one slice
  CHECK(v.origin[0] == doctest::Approx(-158.135803));
  CHECK(v.origin[2] == doctest::Approx(-75.699997));
  CHECK(v.slice_dir[2] == doctest::Approx(1.0));
  // A head-and-neck slice: soft tissue dominates, nothing below air.
  CHECK(*std::min_element(v.voxels.begin(), v.voxels.end()) >= -1024.0f);
  CHECK(fraction_in(v, -100, 100) > 0.2);
}

// Golden values from another decoder: pydicom 2.3 (Debian 12) read the same
// files, stored * RescaleSlope + RescaleIntercept, for a CT values below -1024 HU
// and PixelPaddingValue set to -1024. Voxel (x, y) is pixel_array[y, x].
TEST_CASE("DICOM decoded values match pydicom's: CT_small, MR_small, and CT_small cut to 12 stored bits") {
  const auto sum = [](const Volume& v) { return std::accumulate(v.voxels.begin(), v.voxels.end(), 0.0); };
  const Volume ct = read_dicom_series(samples() + "CT_small.dcm");
  CHECK(sum(ct) == -1950906.0);
  CHECK(ct.at(20, 10, 0) == -839.0f);
  CHECK(ct.at(64, 64, 0) == 904.0f);
  CHECK(ct.at(5, 100, 0) == 56.0f);
  const Volume mr = read_dicom_series(samples() + "MR_small.dcm");
  CHECK(sum(mr) == 2125338.0);
  CHECK(mr.at(20, 10, 0) == 316.0f);
  CHECK(mr.at(32, 32, 0) == 182.0f);
  CHECK(mr.at(5, 60, 0) == 321.0f);
  // BitsStored 12, HighBit 11 (as old scanners write, with overlay bits
  // above): the top four bits are dropped and bit 11 is the sign, so stored
  // values of 2048 and more turn negative and clamp to -1024 HU.
  test::TempDir dir;
  const std::string twelve = patched_copy(dir, samples() + "CT_small.dcm", std::string("\x28\x00\x01\x01US\x02\x00", 8),
                                          {{8, 12}}, "bits-stored-12-first.dcm");
  const std::string both = patched_copy(dir, twelve, std::string("\x28\x00\x02\x01US\x02\x00", 8), {{8, 11}},
                                        "bits-stored-12.dcm");
  const Volume cut = read_dicom_series(both);
  CHECK(sum(cut) == -1974279.0);
  CHECK(std::count(cut.voxels.begin(), cut.voxels.end(), -1024.0f) == 11);
  CHECK(*std::max_element(cut.voxels.begin(), cut.voxels.end()) == 1003.0f);
}

TEST_CASE("DICOM MR: RLE and JPEG-LS decode to exactly the uncompressed pixels, marked as not HU") {
  const Volume raw = read_dicom_series(samples() + "MR_small.dcm");
  CHECK(raw.nx == 64);
  CHECK(raw.ny == 64);
  CHECK(raw.intensity == Intensity::ScannerUnits);
  CHECK(raw.description.find("not Hounsfield") != std::string::npos);
  for (const char* name : {"MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm"}) {
    CAPTURE(name);
    const Volume v = read_dicom_series(samples() + name);
    CHECK(v.voxels == raw.voxels);
  }
}

TEST_CASE("DICOM JPEG 2000, 12-bit JPEG and big-endian RGB samples decode to their sizes") {
  for (const char* name : {"JPEG2000.dcm", "JPGExtended.dcm"}) {
    CAPTURE(name);
    const Volume v = read_dicom_series(samples() + name);
    CHECK(v.nx == 256);
    CHECK(v.ny == 1024);
    CHECK(v.spacing[0] == doctest::Approx(2.26));
    const auto [lo, hi] = std::minmax_element(v.voxels.begin(), v.voxels.end());
    CHECK(*lo >= -100.0f);
    CHECK(*hi > 100.0f);  // not an all-black decode
    CHECK(*hi < 4096.0f);  // within 12 bits
  }
  // Both files hold the same NM image (one lossless JPEG 2000, one lossy
  // 12-bit JPEG): a wrong bit depth or byte order would decorrelate them.
  const Volume j2k = read_dicom_series(samples() + "JPEG2000.dcm");
  const Volume jpg = read_dicom_series(samples() + "JPGExtended.dcm");
  double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
  const double n = static_cast<double>(j2k.voxels.size());
  for (size_t k = 0; k < j2k.voxels.size(); ++k) {
    const double a = j2k.voxels[k], b = jpg.voxels[k];
    sa += a, sb += b, saa += a * a, sbb += b * b, sab += a * b;
  }
  const double correlation = (sab / n - sa * sb / (n * n)) /
                             std::sqrt((saa / n - sa * sa / (n * n)) * (sbb / n - sb * sb / (n * n)));
  CHECK(correlation > 0.9);

  const Volume rgb = read_dicom_series(samples() + "ExplVR_BigEnd.dcm");
  CHECK(rgb.nx == 80);
  CHECK(rgb.ny == 60);
  CHECK(*std::max_element(rgb.voxels.begin(), rgb.voxels.end()) <= 255.0f);
}

TEST_CASE("DICOM folder with several series picks the CT series with the most slices") {
  const Volume v = read_dicom_series(samples());
  // chest-ct-slice-0/1: one series of two slices, 1 mm apart, no Modality but a rescale.
  CHECK(v.nx == 512);
  CHECK(v.nz == 2);
  CHECK(v.spacing[2] == doctest::Approx(1.0));
  CHECK(v.intensity == Intensity::HounsfieldUnits);
  CHECK(v.description.find("chosen among 5 series") != std::string::npos);
  check_chest_ct(v);
}

TEST_CASE("DICOM COVID series (JPEG Lossless): 255 slices of 512x512 at 0.703 x 1.25 mm") {
  const auto start = std::chrono::steady_clock::now();
  const Volume v = read_any(test::data_dir() + "/ct-covid-ricord");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE("255 JPEG Lossless slices read in " << seconds << " s");
  CHECK(v.nx == 512);
  CHECK(v.ny == 512);
  CHECK(v.nz == 255);
  CHECK(v.spacing[0] == doctest::Approx(0.703125));
  CHECK(v.spacing[1] == doctest::Approx(0.703125));
  CHECK(v.spacing[2] == doctest::Approx(1.25));
  CHECK(v.slice_dir[2] == doctest::Approx(1.0));
  check_chest_ct(v);
  // -3024 marks the outside of the reconstruction circle: the corner is air now.
  CHECK(v.at(0, 0, 128) == -1024.0f);
}

TEST_CASE("DICOM healthy TCGA and Lung-PET-CT-Dx series load in slice order") {
  const Volume tcga = read_dicom_series(test::data_dir() + "/ct-healthy-tcga");
  CHECK(tcga.nx == 512);
  CHECK(tcga.nz == 48);
  CHECK(tcga.spacing[2] == doctest::Approx(5.0));
  check_chest_ct(tcga);
  const Volume lungdx = read_dicom_series(test::data_dir() + "/ct-lungdx");
  CHECK(lungdx.nx == 512);
  CHECK(lungdx.nz == 30);
  CHECK(lungdx.spacing[2] == doctest::Approx(8.0));
  check_chest_ct(lungdx);
}

TEST_CASE("DICOM slices are ordered by position, not by file name") {
  test::TempDir dir;
  // Name the upper slice so that it sorts first.
  const auto s0 = samples() + "chest-ct-slice-0.dcm", s1 = samples() + "chest-ct-slice-1.dcm";
  test::write_bytes(dir.file("a.dcm"), test::read_bytes(s1));
  test::write_bytes(dir.file("b.dcm"), test::read_bytes(s0));
  const Volume v = read_dicom_series(dir.path());
  const Volume lower = read_dicom_series(s0);
  REQUIRE(v.nz == 2);
  CHECK(v.origin[2] == doctest::Approx(0.0));
  CHECK(std::equal(lower.voxels.begin(), lower.voxels.end(), v.slice(0)));
}

TEST_CASE("DICOM: a slice cut short in a folder of files without .dcm names is said, not silently missing") {
  // PACS exports often name their files IM1, IM2, ...: without the name or the
  // DICM marker, an empty or cut file used to be passed over without a word.
  // It is passed over still (an empty LOCKFILE beside a series is no slice),
  // with a warning; alone, it is the error.
  test::TempDir dir;
  const auto s0 = samples() + "chest-ct-slice-0.dcm", s1 = samples() + "chest-ct-slice-1.dcm";
  test::write_bytes(dir.file("IM1"), test::read_bytes(s0));
  test::write_bytes(dir.file("IM2"), test::read_bytes(s1));
  test::write_bytes(dir.file("README"), {'h', 'i', '\n'});  // other files beside a series are passed over
  REQUIRE(read_dicom_series(dir.path()).nz == 2);
  const std::vector<char> bytes = test::read_bytes(s1);
  REQUIRE(std::all_of(bytes.begin(), bytes.begin() + 128, [](char b) { return b == 0; }));
  for (const size_t size : {size_t{0}, size_t{100}, size_t{131}, size_t{2000}}) {
    CAPTURE(size);
    std::vector<char> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(size));
    if (size == 2000) std::fill_n(cut.begin() + 128, 4, 'X');  // the marker itself damaged
    test::write_bytes(dir.file("IM2"), cut);
    const Volume v = read_dicom_series(dir.path());
    CHECK(v.nz == 1);
    REQUIRE(v.warnings.size() == 1);
    CHECK(v.warnings[0].find("1 file here looks like DICOM cut short and was passed over, e.g. " + dir.file("IM2") +
                             " (" + (size == 0 ? "empty" : size < 128 ? std::to_string(size) + " bytes, all zero"
                                                                     : "a DICOM preamble without the DICM marker after it") +
                             "): if it was a slice of this series, the series lacks it") == 0);
    check_fails(dir.file("IM2"), dir.file("IM2"), size == 0 ? "(empty)" : "");  // alone: no image at all
  }
}

TEST_CASE("DICOM truncated copies and garbage fail with the file's name") {
  test::TempDir dir;
  const std::vector<char> bytes = test::read_bytes(samples() + "CT_small.dcm");
  for (size_t size : {size_t{0}, size_t{100}, size_t{140}, size_t{400}, size_t{2000}, bytes.size() / 2, bytes.size() - 1}) {
    CAPTURE(size);
    const std::string file = dir.file("cut" + std::to_string(size) + ".dcm");
    test::write_bytes(file, std::vector<char>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(size)));
    check_fails(file, file);
  }
  const std::vector<char> jpeg = test::read_bytes(test::data_dir() + "/ct-covid-ricord/1-100.dcm");
  const std::string cut = dir.file("jpeg-lossless-cut.dcm");
  test::write_bytes(cut, std::vector<char>(jpeg.begin(), jpeg.begin() + static_cast<std::ptrdiff_t>(jpeg.size() * 3 / 4)));
  check_fails(cut, cut);
  const std::string noise = dir.file("noise.dcm");
  test::write_bytes(noise, test::garbage(5000, 7));
  check_fails(noise, noise);
  // Garbage after a valid preamble and magic.
  std::vector<char> fake = test::garbage(3000, 8);
  std::copy_n("DICM", 4, fake.begin() + 128);
  const std::string fake_file = dir.file("fake");
  test::write_bytes(fake_file, fake);
  check_fails(fake_file, fake_file);
  // An unknown value representation in the meta header (aborted inside GDCM,
  // found by fuzz_dicom).
  std::vector<char> bad_vr = bytes;
  REQUIRE(std::string(bad_vr.data() + 136, 2) == "UL");  // (0002,0000) group length
  bad_vr[137] = 'Q';
  const std::string bad_vr_file = dir.file("bad-vr.dcm");
  test::write_bytes(bad_vr_file, bad_vr);
  check_fails(bad_vr_file, bad_vr_file, "value representation 'UQ'");
  // A meta header longer than its group length says (another GDCM abort).
  std::vector<char> bad_length = bytes;
  bad_length[140] = static_cast<char>(bad_length[140] - 2);
  const std::string bad_length_file = dir.file("bad-group-length.dcm");
  test::write_bytes(bad_length_file, bad_length);
  check_fails(bad_length_file, bad_length_file, "group length");
  // Columns with a signed VR: GDCM's typed read of it aborted (found by fuzz_dicom).
  const std::string signed_columns = patched_copy(dir, samples() + "CT_small.dcm", std::string("\x28\x00\x11\x00US", 6),
                                                  {{4, 'S'}}, "signed-columns.dcm");
  check_fails(signed_columns, signed_columns, "(0028,0011) has value representation SS");
  // Compressed data declaring a wider image than the header: GDCM's JPEG 2000
  // codec overran its buffer (found by fuzz_dicom); JPEG is checked alike.
  const auto widen = [&](const std::string& source, const std::string& marker, size_t width_offset) {
    std::vector<char> data = test::read_bytes(source);
    const auto found = std::search(data.begin(), data.end(), marker.begin(), marker.end());
    REQUIRE(found != data.end());
    found[static_cast<std::ptrdiff_t>(width_offset)] = static_cast<char>(0x88);  // high byte of the width
    const std::string file = dir.file("wide-" + std::filesystem::path(source).filename().string());
    test::write_bytes(file, data);
    return file;
  };
  const std::string wide_j2k = widen(samples() + "JPEG2000.dcm", std::string("\xff\x4f\xff\x51", 4), 10);
  check_fails(wide_j2k, wide_j2k, "JPEG 2000 data is 34816 x 1024");
  const std::string wide_jpeg = widen(test::data_dir() + "/ct-covid-ricord/1-100.dcm", std::string("\xff\xc3", 2), 7);
  check_fails(wide_jpeg, wide_jpeg, "JPEG data is 34816 x 512");
  // The magic but no recognisable meta header: GDCM would guess the byte order
  // (and once allocated 2 GiB doing so; found by fuzz_dicom).
  std::vector<char> no_meta = bytes;
  no_meta[133] = 0x08;
  const std::string no_meta_file = dir.file("no-meta.dcm");
  test::write_bytes(no_meta_file, no_meta);
  check_fails(no_meta_file, no_meta_file, "names no transfer syntax");
  // Encapsulated pixel data with a VR other than OB/OW (GDCM asserts; found by fuzz_dicom).
  const std::string of_pixels =
      patched_copy(dir, test::data_dir() + "/ct-covid-ricord/1-100.dcm",
                   std::string("\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff", 12), {{5, 'F'}}, "of-pixels.dcm");
  check_fails(of_pixels, of_pixels, "undefined length");
  // A transfer syntax we do not decode.
  const std::string unknown_syntax = patched_copy(dir, samples() + "CT_small.dcm", "1.2.840.10008.1.2.1", {{18, '9'}},
                                                  "unknown-syntax.dcm");
  check_fails(unknown_syntax, unknown_syntax, "transfer syntax 1.2.840.10008.1.2.9 is not supported");
  // Stray bytes between JPEG markers: libjpeg warns, GDCM asserts on the
  // warning (found by fuzz_dicom).
  const std::string stray =
      patched_copy(dir, samples() + "JPGExtended.dcm", std::string("\xff\xdb", 2), {{0, 0x00}}, "stray.dcm");
  check_fails(stray, stray, "stray bytes between JPEG markers");
  // A sequence delimiter with a length: GDCM allocated it (found by fuzz_dicom).
  std::vector<char> delimited = test::read_bytes(samples() + "MR_small_jpeg_ls_lossless.dcm");
  const std::string end_of_fragments("\xfe\xff\xdd\xe0\x00\x00\x00\x00", 8);
  const auto delimiter = std::find_end(delimited.begin(), delimited.end(), end_of_fragments.begin(), end_of_fragments.end());
  REQUIRE(delimiter != delimited.end());
  delimiter[7] = static_cast<char>(0xff);
  const std::string delimited_file = dir.file("delimiter-length.dcm");
  test::write_bytes(delimited_file, delimited);
  check_fails(delimited_file, delimited_file, "non-zero length");
  // RLE frames whose header names a segment count or offsets outside the frame:
  // GDCM trusted them and read past the frame (a SEGV, found by fuzz_dicom).
  const auto rle_header = [&](std::vector<char>& data) {
    const std::string pixels("\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff", 12);
    const auto tag = std::search(data.begin(), data.end(), pixels.begin(), pixels.end());
    REQUIRE(tag != data.end());
    const size_t offset_table = size_t(tag - data.begin()) + 12;  // its item
    uint32_t table_length = 0;
    std::memcpy(&table_length, data.data() + offset_table + 4, 4);
    return offset_table + 8 + table_length + 8;  // past the first fragment's item header
  };
  const auto rle_file = [&](const std::string& name, size_t field, uint32_t value) {
    std::vector<char> data = test::read_bytes(samples() + "MR_small_RLE.dcm");
    const size_t header = rle_header(data);
    std::memcpy(data.data() + header + field, &value, 4);
    const std::string file = dir.file(name);
    test::write_bytes(file, data);
    return file;
  };
  const std::string rle_count = rle_file("rle-count.dcm", 0, 151060482);
  check_fails(rle_count, rle_count, "RLE header names 151060482 segment(s)");
  const std::string rle_offset = rle_file("rle-offset.dcm", 8, 0x7fffffff);
  check_fails(rle_offset, rle_offset, "RLE segment 1 starts at byte 2147483647");
  // (0008,0013) turned into the retired (0008,0010) Recognition Code with a
  // time in it: GDCM asserted that it names ACR-NEMA (found by the fuzz replay).
  const std::string recognition = patched_copy(dir, samples() + "MR_small_jpeg_ls_lossless.dcm",
                                               std::string("\x08\x00\x13\x00TM", 6), {{2, 0x10}}, "recognition.dcm");
  check_fails(recognition, recognition, "(0008,0010) Recognition Code holds '185434'");
  // A lossless JPEG frame of 10-bit precision: GDCM's JPEG codec asserted on it
  // (found by the fuzz replay). Its precision byte follows the SOF3 marker's length.
  const std::string ten_bits = patched_copy(dir, test::data_dir() + "/ct-covid-ricord/1-100.dcm",
                                            std::string("\xff\xc3", 2), {{4, 10}}, "ten-bits.dcm");
  check_fails(ten_bits, ten_bits, "JPEG data of 10-bit precision");
  // An image whose PlanarConfiguration is 2: GDCM asserted (found by the fuzz replay).
  const std::string planar = patched_copy(dir, samples() + "ExplVR_BigEnd.dcm",
                                          std::string("\x00\x28\x00\x06US\x00\x02", 8),  // big endian
                                          {{9, 2}}, "planar-2.dcm");
  check_fails(planar, planar, "PlanarConfiguration 2 is neither 0 nor 1");
  // Lossy Image Compression (0028,2110) stored as US instead of CS: GDCM's typed
  // read of it asserted while decoding a lossy JPEG (found by the fuzz replay).
  const std::string lossy = patched_copy(dir, samples() + "JPGExtended.dcm", std::string("\x28\x00\x10\x21" "CS", 6),
                                         {{4, 'U'}, {5, 'S'}}, "lossy-us.dcm");
  check_fails(lossy, lossy, "(0028,2110) has value representation US");
  // BitsStored (0028,0101) renamed away, so missing: GDCM read it as 0 and
  // asserted while copying the 8-bit samples (found by the fuzz replay).
  const std::string no_stored = patched_copy(dir, samples() + "ExplVR_BigEnd.dcm",
                                             std::string("\x00\x28\x01\x01US", 6),  // big endian
                                             {{3, 0x07}}, "no-bits-stored.dcm");  // now (0028,0107)
  check_fails(no_stored, no_stored, "BitsStored missing with BitsAllocated 8");
  // An empty folder, a folder with no DICOM in it, a path that is not there.
  check_fails(dir.path() + "/nothing-here", "nothing-here", "no such file");
  test::TempDir empty;
  check_fails(empty.path(), empty.path(), "no DICOM");
}

TEST_CASE("DICOM as hospitals export it: repeated images, scouts, MIPs, other series, tilt, stray files") {
  // chest-ct-slice-0 and -1: one series of two axial slices 1 mm apart (no
  // Modality, a rescale). Copies edited into what exports hold beside them.
  const std::string s0 = samples() + "chest-ct-slice-0.dcm", s1 = samples() + "chest-ct-slice-1.dcm";
  const auto series = [&](test::TempDir& dir) {
    rewrite(s0, dir.file("IM1.dcm"), [](gdcm::DataSet&) {});
    rewrite(s1, dir.file("IM2.dcm"), [](gdcm::DataSet&) {});
  };
  const auto has_warning = [](const Volume& v, const std::string& text) {
    return std::any_of(v.warnings.begin(), v.warnings.end(), [&](const std::string& w) { return w.find(text) != std::string::npos; });
  };
  // The two slices and one more file, made from `from` by `edit`, which the reader leaves out saying `warning`.
  const auto left_out = [&](const std::string& from, const std::function<void(gdcm::DataSet&)>& edit,
                            const std::string& warning) {
    test::TempDir dir;
    series(dir);
    rewrite(from, dir.file("IM3.dcm"), edit);
    const Volume v = read_dicom_series(dir.path());
    CHECK(v.nz == 2);
    CHECK(has_warning(v, warning));
  };
  SUBCASE("an image sent twice is read once, with a warning") {
    left_out(s1, [](gdcm::DataSet&) {}, "1 file repeats an image of the series and was left out");
  }
  SUBCASE("a scout under the series' UID is left out, with a warning") {
    left_out(s0, [](gdcm::DataSet& ds) {
      set<0x0008, 0x0018>(ds, "1.2.3.4.7");
      set_code_string(ds, 0x0008, 0x0008, "ORIGINAL\\PRIMARY\\LOCALIZER");
      set_position(ds, -50.0);
    }, "1 localizer (scout) image in the series left out");
  }
  SUBCASE("a MIP series with more images loses to the original; the other series is named") {
    test::TempDir dir;
    series(dir);
    for (int k = 0; k < 3; ++k)
      rewrite(s0, dir.file("MIP" + std::to_string(k) + ".dcm"), [k](gdcm::DataSet& ds) {
        set<0x0020, 0x000e>(ds, "1.2.3.9");
        set<0x0008, 0x0018>(ds, "1.2.3.9." + std::to_string(k));
        set_code_string(ds, 0x0008, 0x0008, "DERIVED\\SECONDARY\\MIP");
        set<0x0008, 0x103e>(ds, "MIP 10mm");
        set_position(ds, 10.0 * k);
      });
    const Volume v = read_dicom_series(dir.path());
    CHECK(v.nz == 2);
    CHECK(v.description.find("made at the scan rather than derived") != std::string::npos);
    CHECK(has_warning(v, "1 other CT series is in this folder ('MIP 10mm' (3 slices, derived))"));
  }
  SUBCASE("two reconstructions with as many slices: the one for the lungs") {
    test::TempDir dir;
    series(dir);
    for (int k = 0; k < 2; ++k)
      rewrite(k ? s1 : s0, dir.file("LUNG" + std::to_string(k) + ".dcm"), [k](gdcm::DataSet& ds) {
        set<0x0020, 0x000e>(ds, "9.9.9");  // sorts after the other series' UID
        set<0x0008, 0x0018>(ds, "9.9.9." + std::to_string(k));
        set<0x0008, 0x103e>(ds, "Thorax 1.0 Lung");
      });
    const Volume v = read_dicom_series(dir.path());
    CHECK(v.description.find("'Thorax 1.0 Lung'") != std::string::npos);
  }
  SUBCASE("an enhanced multi-frame image is refused, not read without its functional groups") {
    test::TempDir dir;
    rewrite(s0, dir.file("enhanced.dcm"), [](gdcm::DataSet& ds) {
      gdcm::DataElement groups(gdcm::Tag(0x5200, 0x9229));
      groups.SetVR(gdcm::VR::SQ);
      ds.Insert(groups);
    });
    check_fails(dir.path(), "enhanced.dcm", "an enhanced multi-frame CT image");
  }
  SUBCASE("a CT slice of unsigned values without RescaleIntercept is refused, naming it; signed values are HU") {
    test::TempDir dir;
    rewrite(s0, dir.file("IM1.dcm"), [](gdcm::DataSet& ds) { set<0x0008, 0x0060>(ds, "CT"); });
    rewrite(s1, dir.file("IM2.dcm"), [](gdcm::DataSet& ds) {
      set<0x0008, 0x0060>(ds, "CT");
      ds.Remove(gdcm::Tag(0x0028, 0x1052));
    });
    CHECK(read_dicom_series(dir.path()).nz == 2);  // the sample's values are signed: taken as stored
    rewrite(s1, dir.file("IM2.dcm"), [](gdcm::DataSet& ds) {
      set<0x0008, 0x0060>(ds, "CT");
      ds.Remove(gdcm::Tag(0x0028, 0x1052));
      set<0x0028, 0x0103>(ds, uint16_t{0});
    });
    check_fails(dir.path(), "IM2.dcm", "without RescaleIntercept");
  }
  SUBCASE("a gantry tilt: the volume of a voxel is the planes' distance, and a warning says the grid is sheared") {
    test::TempDir dir;
    rewrite(s0, dir.file("IM1.dcm"), [](gdcm::DataSet& ds) { set_position(ds, 0.0); });
    rewrite(s1, dir.file("IM2.dcm"), [](gdcm::DataSet& ds) {
      gdcm::Attribute<0x0020, 0x0032> position = {{0.0, std::tan(25 * M_PI / 180), 1.0}};
      ds.Replace(position.GetAsDataElement());
    });
    const Volume v = read_dicom_series(dir.path());
    REQUIRE(v.nz == 2);
    CHECK(has_warning(v, "gantry tilt of 25 degrees"));
    CHECK(voxel_volume_mm3(v) == doctest::Approx(v.spacing[0] * v.spacing[1] * 1.0));
  }
  SUBCASE("macOS resource forks (._IM1.dcm) beside the series are passed over") {
    test::TempDir dir;
    series(dir);
    test::write_bytes(dir.file("._IM1.dcm"), test::garbage(4096, 3));
    CHECK(read_dicom_series(dir.path()).nz == 2);
  }
}

TEST_CASE("DICOM inconsistent series fail with the files' names and the cause") {
  const std::string ct = samples() + "chest-ct-slice-0.dcm";
  SUBCASE("duplicate positions") {
    test::TempDir dir;
    rewrite(ct, dir.file("a.dcm"), [](gdcm::DataSet&) {});
    rewrite(ct, dir.file("b.dcm"), [](gdcm::DataSet& ds) { set<0x0008, 0x0018>(ds, "1.2.3.4.5"); });
    check_fails(dir.path(), "a.dcm", "same slice position");
  }
  SUBCASE("mixed sizes") {
    test::TempDir dir;
    rewrite(ct, dir.file("a.dcm"), [](gdcm::DataSet&) {});
    rewrite(samples() + "CT_small.dcm", dir.file("b.dcm"), [](gdcm::DataSet& ds) {
      set<0x0020, 0x000e>(ds, "1.2.826.0.1.3680043.8.498.22032370629701851459946006816247576553");
      set_position(ds, 3.0);
    });
    check_fails(dir.path(), "b.dcm", "inconsistent");
  }
  SUBCASE("missing pixel data") {
    test::TempDir dir;
    rewrite(ct, dir.file("a.dcm"), [](gdcm::DataSet& ds) { ds.Remove(gdcm::Tag(0x7fe0, 0x0010)); });
    check_fails(dir.path(), "a.dcm", "pixel data");
  }
  SUBCASE("a header claiming absurd dimensions") {
    test::TempDir dir;
    rewrite(ct, dir.file("a.dcm"), [](gdcm::DataSet& ds) {
      set<0x0028, 0x0010>(ds, uint16_t{65535});
      set<0x0028, 0x0011>(ds, uint16_t{65535});
    });
    check_fails(dir.path(), "a.dcm");
  }
  SUBCASE("missing position in a multi-slice series") {
    test::TempDir dir;
    rewrite(ct, dir.file("a.dcm"), [](gdcm::DataSet&) {});
    rewrite(ct, dir.file("b.dcm"), [](gdcm::DataSet& ds) {
      ds.Remove(gdcm::Tag(0x0020, 0x0032));
      set<0x0008, 0x0018>(ds, "1.2.3.4.6");  // another image, not a copy of a.dcm
    });
    check_fails(dir.path(), "b.dcm", "ImagePositionPatient");
  }
}

TEST_CASE("DICOM zero padding after the data set is ignored (six zero bytes used to abort inside GDCM)") {
  test::TempDir dir;
  for (size_t padding : {size_t{2}, size_t{6}, size_t{8}, size_t{64}}) {
    CAPTURE(padding);
    std::vector<char> bytes = test::read_bytes(samples() + "ExplVR_BigEnd.dcm");
    bytes.resize(bytes.size() + padding, 0);
    const std::string file = dir.file("padded" + std::to_string(padding) + ".dcm");
    test::write_bytes(file, bytes);
    CHECK(read_dicom_series(file).voxels == read_dicom_series(samples() + "ExplVR_BigEnd.dcm").voxels);
  }
}
