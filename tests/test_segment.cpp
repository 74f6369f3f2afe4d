// `covidrate segment` end to end on real CT: a DICOM series (10 slices of the
// RICORD volume), a NIfTI slice, MedSeg pictures and a batch folder. The
// network is a width-1/16 COVID-Rate with its deterministic initial weights:
// these tests check plumbing, alignment with the input and the figures'
// consistency, not accuracy. The pipeline under the command (batches, the
// lungs' box, figures, montage) on synthetic volumes: tests/test_segment_volume.cpp.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include "data/dicom.h"
#include "data/image2d.h"
#include "data/input_domain.h"
#include "data/lungs.h"
#include "data/nifti.h"
#include "data/read_any.h"
#include "data/reorient.h"
#include "data/report.h"
#include "data/segment_pipeline.h"
#include "data/segment_study.h"
#include "kernels/op_profile.h"
#include "kernels/ops.h"
#include "model/covidrate_net.h"
#include "nn/json.h"
#include "support/test_support.h"
#include "support/run_covidrate.h"
#include "support/volume_checks.h"
#include "temp_files.h"

using namespace covidrate;
namespace fs = std::filesystem;

namespace {

test::ProgramRun run_segment(const test::TempDir& dir, const std::string& args) {
  return test::run_covidrate(dir, "segment " + args);
}

// Weights as train writes them: a tiny network, its architecture in the metadata.
std::string tiny_weights(const test::TempDir& dir) {
  const std::string path = dir.file("weights.safetensors");
  CovidRateNet net(NetConfig{.width = 0.0625, .cpb = true, .seed = 3});
  net.parameters().save(path, {{"width", "0.0625"}, {"cpb", "1"}, {"size", "64"}});
  return path;
}

// Ten consecutive slices from the middle of the RICORD series (lungs in all).
std::string ricord_subset(const test::TempDir& dir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(fs::path(test::data_dir()) / "ct-covid-ricord"))
    if (e.path().extension() == ".dcm") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() > 140);
  const std::string series = dir.file("ricord10");
  fs::create_directories(series);
  for (size_t i = 120; i < 130; ++i) fs::copy_file(files[i], fs::path(series) / files[i].filename());
  return series;
}

const json::Value& member(const json::Value& v, const char* key) {
  const json::Value* m = v.find(key);
  REQUIRE_MESSAGE(m, "report.json lacks '" << key << "'");
  return *m;
}

double number(const json::Value& v, const char* key) { return std::stod(member(v, key).text); }

// Checks report.json's fields against the mask and lungs written beside it.
void check_report(const json::Value& r, const data::Volume& lesions, const data::Volume& lungs) {
  for (const char* key :
       {"study", "input", "weights", "device", "precision", "threshold", "study_figures", "timings_s", "memory_mib",
        "outputs"})
    member(r, key);
  // The process's peak resident set: more than the program and its libraries
  // take to start (about 20 MiB), less than any machine; the device's only on a GPU.
  const json::Value& memory = member(r, "memory_mib");
  CHECK(number(memory, "process_peak_resident") > 20);
  CHECK(number(memory, "process_peak_resident") < 1024 * 1024);
  CHECK((member(memory, "device_peak").kind == json::Value::Kind::Null) == (member(r, "device").text == "cpu"));
  CHECK(member(member(r, "weights"), "fnv1a64").text.size() == 16);
  CHECK(member(member(r, "weights"), "metadata").find("width"));
  const json::Value& t = member(r, "timings_s");
  for (const char* key : {"read", "lungs", "network", "write", "total", "slices_per_s"}) CHECK(number(t, key) >= 0);
  CHECK(number(t, "total") >= number(t, "network"));
  // The network phase's steps (data/network_stages.h) lie inside it.
  const json::Value& stages = member(t, "network_stages");
  double inside = 0;
  for (const char* key : {"prepare_wait", "upload", "forward", "download", "device_wait", "put_back_wait"}) {
    CHECK(number(stages, key) >= 0);
    inside += number(stages, key);
  }
  CHECK(inside <= number(t, "network") * 1.001 + 1e-6);
  CHECK(number(t, "startup") > 0);  // the weights were read, at least
  if (number(member(r, "study_figures"), "slices_with_lung") > 0) CHECK(number(stages, "forward") > 0);
  // On the CPU nothing is searched; on CUDA the count is what cuDNN timed.
  // Nor does the CPU count system allocations (its allocator is shared by threads).
  if (member(r, "device").text == "cpu") {
    CHECK(number(r, "algorithm_searches") == 0);
    CHECK(number(r, "device_system_allocations") == 0);
  } else {
    CHECK(number(r, "algorithm_searches") >= 0);
    CHECK(number(r, "device_system_allocations") >= 0);
  }
  const json::Value& slices = member(r, "slices");
  REQUIRE(static_cast<int64_t>(slices.items.size()) == lesions.nz);
  int64_t lesion_total = 0, infected = 0, with_index = 0, above = 0;
  double index_sum = 0;
  const int64_t pixels = lesions.nx * lesions.ny;
  for (int64_t z = 0; z < lesions.nz; ++z) {
    const json::Value& s = slices.items[z];
    CHECK(number(s, "index") == z);
    // The certainty index: null for slices the network did not see, else 0 or a
    // mean of probabilities above the paper's cut-off.
    const json::Value& ci = member(s, "certainty_index");
    if (ci.kind != json::Value::Kind::Null) {
      ++with_index;
      const double v = number(s, "certainty_index");
      CHECK((v == 0 || (v > kPaperCertaintyCutoff && v <= 1)));
      if (v > 0) index_sum += v, ++above;
    }
    int64_t lesion = 0, lung = 0;
    for (int64_t i = 0; i < pixels; ++i) {
      lesion += lesions.slice(z)[i] != 0.f;
      lung += lungs.slice(z)[i] != 0.f;
    }
    CHECK(number(s, "lesion_px") == lesion);
    CHECK(number(s, "lung_px") == lung);
    CHECK(number(s, "lesion_mm2") == doctest::Approx(lesion * lesions.spacing[0] * lesions.spacing[1]).epsilon(1e-4));
    const double rate = lung > 0 ? static_cast<double>(lesion) / lung : 0.0;
    CHECK(number(s, "infection_rate") == doctest::Approx(rate).epsilon(1e-4));
    const bool is_infected = member(s, "infected").boolean;
    CHECK(is_infected == (rate > data::kInfectedSliceRate));
    infected += is_infected;
    lesion_total += lesion;
  }
  const json::Value& f = member(r, "study_figures");
  CHECK(number(f, "infected_slices") == infected);
  CHECK(with_index == number(f, "slices_with_lung"));
  if (above > 0) CHECK(number(f, "mean_certainty_index") == doctest::Approx(index_sum / above).epsilon(1e-4));
  else CHECK(member(f, "mean_certainty_index").kind == json::Value::Kind::Null);
  const json::Value& both = member(f, "both_lungs");
  CHECK(number(both, "lesion_voxels") == lesion_total);
  const double voxel_ml = lesions.spacing[0] * lesions.spacing[1] * lesions.spacing[2] / 1000;
  CHECK(number(both, "lesion_ml") == doctest::Approx(lesion_total * voxel_ml).epsilon(1e-4));
  CHECK(number(both, "lung_voxels") ==
        number(member(f, "left_lung"), "lung_voxels") + number(member(f, "right_lung"), "lung_voxels"));
  for (const char* side : {"both_lungs", "left_lung", "right_lung"}) {
    const double opacity = number(member(f, side), "opacity_percent");
    CHECK(opacity >= 0);
    CHECK(opacity <= 100);
  }
}

}  // namespace

TEST_CASE("segment a DICOM series: outputs aligned with the input, every report field consistent") {
  test::TempDir dir;
  const std::string weights = tiny_weights(dir), series = ricord_subset(dir), out = dir.file("out");
  // A low threshold so that the untrained network marks some lesion.
  const test::ProgramRun run = run_segment(dir, series + " --out " + out + " --weights " + weights +
                                       " --threshold 0.05 --save-prob --save-lungs --batch 3");
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.out.find("opacity") != std::string::npos);
  CHECK(run.out.find("slices/s") != std::string::npos);
  CHECK_FALSE(fs::exists(out + ".tmp"));

  const data::Volume input = data::read_dicom_series(series);
  const data::Volume lesions = data::read_nifti(out + "/lesion_mask.nii.gz");
  const data::Volume lungs = data::read_nifti(out + "/lungs.nii.gz");
  const data::Volume probability = data::read_nifti(out + "/probability.nii.gz");
  test::check_same_geometry(lesions, input);
  test::check_same_geometry(lungs, input);
  test::check_same_geometry(probability, input);
  // The mask is the probability above the threshold, inside the lungs.
  int64_t lesion_voxels = 0, wrong = 0, out_of_range = 0;
  for (size_t i = 0; i < lesions.voxels.size(); ++i) {
    const bool expected = probability.voxels[i] > 0.05f && lungs.voxels[i] != 0.f;
    wrong += (lesions.voxels[i] != 0.f) != expected;
    lesion_voxels += lesions.voxels[i] != 0.f;
    out_of_range += !(probability.voxels[i] >= 0.f && probability.voxels[i] <= 1.f);
  }
  CHECK(wrong == 0);
  CHECK(out_of_range == 0);
  CHECK(lesion_voxels > 0);

  const json::Value report = json::parse(test::read_text_file(out + "/report.json"));
  check_report(report, lesions, lungs);
  CHECK(member(report, "input").find("kind")->text == "dicom-series");
  // High opacity, counted here from the series' own HU (the report reads it
  // through the input domain): lesion voxels at -200 HU or more, per lung.
  int64_t high[3] = {0, 0, 0};  // both, right, left
  for (size_t i = 0; i < input.voxels.size(); ++i)
    if (lesions.voxels[i] != 0.f && input.voxels[i] >= data::kHighOpacityMinHu) {
      ++high[0];
      ++high[lungs.voxels[i] == float(data::kRightLung) ? 1 : 2];
    }
  CHECK(high[0] > 0);
  const json::Value& figures = member(report, "study_figures");
  CHECK(number(figures, "high_opacity_min_hu") == -200);
  const char* sides[3] = {"both_lungs", "right_lung", "left_lung"};
  for (int k = 0; k < 3; ++k) {
    const json::Value& lung = member(figures, sides[k]);
    CAPTURE(sides[k]);
    CHECK(number(lung, "high_opacity_voxels") == high[k]);
    CHECK(number(lung, "high_opacity_percent") ==
          doctest::Approx(100.0 * high[k] / number(lung, "lung_voxels")).epsilon(1e-4));
    CHECK(number(lung, "high_opacity_voxels") <= number(lung, "lesion_voxels"));
  }
  double per_slice = 0;  // the slices' high-opacity pixels add up to the study's
  for (const json::Value& slice : member(report, "slices").items) per_slice += number(slice, "high_opacity_px");
  CHECK(per_slice == high[0]);
  // Where slice 0 lies, from the series' slice direction (LPS: +z is superior).
  REQUIRE(std::abs(input.slice_dir[2]) > 0.9);
  const std::string first_slice = input.slice_dir[2] > 0 ? "inferior" : "superior";
  CHECK(member(member(report, "input"), "first_slice").text == first_slice);
  for (const char* file : {"report.html", "infection_rate.png", "most_affected.png", "summary.csv"})
    CHECK_MESSAGE(fs::exists(out + "/" + file), file);
  const std::string html = test::read_text_file(out + "/report.html");
  CHECK(html.find("infection_rate.png") != std::string::npos);
  CHECK(html.find("most_affected.png") != std::string::npos);

  SUBCASE("an existing output folder is refused") {
    const test::ProgramRun again = run_segment(dir, series + " --out " + out + " --weights " + weights);
    CHECK(again.exit_code == 1);
    CHECK(again.err.find("already exists") != std::string::npos);
  }
}

TEST_CASE("segment a NIfTI slice: the mask has the input's geometry; a threshold above every probability gives no lesion") {
  test::TempDir dir;
  const std::string weights = tiny_weights(dir), out = dir.file("out");
  const std::string nifti =
      (fs::path(test::data_dir()) / "lung-masks-zenodo" / "coronacases_001_slice_110_ct.nii.gz").string();
  // "--out DIR/" is DIR (it used to be written as DIR/.tmp, then fail to rename).
  const test::ProgramRun run =
      run_segment(dir, nifti + " --out " + out + "/ --weights " + weights + " --threshold 0.999 --save-lungs --save-prob");
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  const data::Volume probability = data::read_nifti(out + "/probability.nii.gz");
  REQUIRE(*std::max_element(probability.voxels.begin(), probability.voxels.end()) < 0.999f);
  const data::Volume lesions = data::read_nifti(out + "/lesion_mask.nii.gz");
  test::check_same_geometry(lesions, data::read_nifti(nifti));
  CHECK(std::all_of(lesions.voxels.begin(), lesions.voxels.end(), [](float v) { return v == 0.f; }));
  const data::Volume lungs = data::read_nifti(out + "/lungs.nii.gz");
  const json::Value report = json::parse(test::read_text_file(out + "/report.json"));
  check_report(report, lesions, lungs);
  const json::Value& both = member(member(report, "study_figures"), "both_lungs");
  CHECK(number(both, "opacity_percent") == 0);
  CHECK(number(both, "lung_voxels") > 0);
  CHECK_FALSE(fs::exists(out + "/most_affected.png"));  // nothing to show
  CHECK(fs::exists(out + "/infection_rate.png"));
}

TEST_CASE("segment --precision: f32 by default, bf16 on request (a note on the CPU), nothing else") {
  test::TempDir dir;
  const std::string weights = tiny_weights(dir);
  const std::string nifti =
      (fs::path(test::data_dir()) / "lung-masks-zenodo" / "coronacases_001_slice_110_ct.nii.gz").string();
  const auto precision_of = [&](const std::string& out) {
    return member(json::parse(test::read_text_file(out + "/report.json")), "precision").text;
  };
  test::ProgramRun run = run_segment(dir, nifti + " --out " + dir.file("f32") + " --weights " + weights);
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(precision_of(dir.file("f32")) == "f32");

  run = run_segment(dir, nifti + " --out " + dir.file("bf16") + " --weights " + weights + " --precision bf16");
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(precision_of(dir.file("bf16")) == "bf16");
  CHECK(run.err.find("bf16 on the CPU is the reference path") != std::string::npos);

  run = run_segment(dir, nifti + " --out " + dir.file("f16") + " --weights " + weights + " --precision f16");
  CHECK(run.exit_code != 0);
  CHECK(run.err.find("--precision must be f32 or bf16, got 'f16'") != std::string::npos);
}

TEST_CASE("segment PNG/JPG slices: one mask per picture at its own size") {
  test::TempDir dir;
  const std::string weights = tiny_weights(dir), out = dir.file("out");
  const fs::path images = fs::path(test::data_dir()) / "medseg-semiseg" / "train" / "images";
  const std::vector<std::string> stems = {"10", "0", "1"};  // the report keeps the command line's order
  std::string inputs;
  for (const std::string& s : stems) inputs += (images / (s + ".jpg")).string() + " ";
  const test::ProgramRun run = run_segment(dir, inputs + "--out " + out + " --weights " + weights + " --save-prob");
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  const json::Value report = json::parse(test::read_text_file(out + "/report.json"));
  CHECK(member(report, "slices").items.size() == stems.size());
  CHECK(member(member(report, "input"), "kind").text == "pictures");
  CHECK(member(member(report, "input"), "first_slice").kind == json::Value::Kind::Null);  // pictures: unknown
  // Pictures carry no HU (their window is unknown): no high-opacity figure, rather than a guess.
  CHECK(member(member(member(report, "study_figures"), "both_lungs"), "high_opacity_percent").kind ==
        json::Value::Kind::Null);
  {  // summary.csv: its high-opacity column empty too; the weights' hash and the threshold in theirs
    std::istringstream csv(test::read_text_file(out + "/summary.csv"));
    std::string header, row;
    REQUIRE(std::getline(csv, header));
    REQUIRE(std::getline(csv, row));
    const auto split = [](const std::string& line) {
      std::vector<std::string> fields(1);
      for (const char c : line) {
        if (c == ',') fields.emplace_back();
        else fields.back().push_back(c);
      }
      return fields;
    };
    const std::vector<std::string> names = split(header), values = split(row);
    REQUIRE(names.size() == values.size());
    std::map<std::string, std::string> field;
    for (size_t k = 0; k < names.size(); ++k) field[names[k]] = values[k];
    CHECK(field.at("high_opacity_percent").empty());
    CHECK(field.at("weights_fnv1a64") == member(member(report, "weights"), "fnv1a64").text);
    CHECK(field.at("threshold") == "0.5");
  }
  for (size_t k = 0; k < stems.size(); ++k) {
    const std::string& s = stems[k];
    const data::Volume picture = data::read_image((images / (s + ".jpg")).string());
    // Each slice of the report names its picture and that picture's size.
    const json::Value& slice = member(report, "slices").items[k];
    CHECK(member(slice, "picture").text == s + ".jpg");
    CHECK(member(slice, "picture_size").items.at(0).text == std::to_string(picture.nx));
    CHECK(member(slice, "picture_size").items.at(1).text == std::to_string(picture.ny));
    for (const std::string& name : {s + ".png", s + "_probability.png"}) {
      REQUIRE_MESSAGE(fs::exists(out + "/masks/" + name), name);
      const data::Volume mask = data::read_image(out + "/masks/" + name);
      CHECK(mask.nx == picture.nx);
      CHECK(mask.ny == picture.ny);
    }
  }
}

TEST_CASE("corrupt input: non-zero exit and no complete-looking output folder") {
  test::TempDir dir;
  const std::string weights = tiny_weights(dir), out = dir.file("out");
  fs::create_directories(dir.file("broken"));
  const fs::path lungdx = fs::path(test::data_dir()) / "ct-lungdx";
  std::vector<char> bytes = test::read_bytes((lungdx / "1-01.dcm").string());
  bytes.resize(bytes.size() / 3);  // truncated inside the pixel data
  test::write_bytes(dir.file("broken/slice.dcm"), bytes);
  const test::ProgramRun run = run_segment(dir, dir.file("broken") + " --out " + out + " --weights " + weights);
  CHECK(run.exit_code != 0);
  CHECK(run.err.find("slice.dcm") != std::string::npos);
  CHECK_FALSE(fs::exists(out));
  CHECK_FALSE(fs::exists(out + ".tmp"));

  SUBCASE("no lung anywhere, or slices too small for a chest: refused, not reported as 0 % opacity") {
    // nibabel's brain MR sample (33 x 41 voxels a slice) and its 4 x 5 test
    // pattern, which read 7.69 % opacity, are refused for their size.
    for (const char* sample : {"anatomical.nii", "standard.nii.gz"}) {
      const std::string input = test::data_dir() + "/nifti-samples/" + sample;
      const test::ProgramRun small = run_segment(dir, input + " --out " + out + " --weights " + weights);
      CHECK(small.exit_code == 1);
      CHECK_MESSAGE(small.err.find(input + " has slices of ") != std::string::npos, small.err);
      CHECK(small.err.find("too small for a chest CT (at least 64 x 64)") != std::string::npos);
      CHECK_FALSE(fs::exists(out));
    }
    // An apical CT slice whose lung (0.2 % of the picture) is below what counts
    // as lung; and a picture of noise, which used to read 99.99 % opacity (lung everywhere).
    std::vector<uint8_t> noise(300 * 300);
    uint32_t state = 1;
    for (uint8_t& v : noise) v = static_cast<uint8_t>((state = state * 1664525u + 1013904223u) >> 24);
    data::write_png_gray(dir.file("noise.png"), noise.data(), 300, 300);
    for (const std::string& input : {test::data_dir() + "/lung-masks-zenodo/coronacases_008_slice_26_ct.nii.gz",
                                    dir.file("noise.png")}) {
      CAPTURE(input);
      const test::ProgramRun none = run_segment(dir, input + " --out " + out + " --weights " + weights);
      CHECK(none.exit_code == 1);
      CHECK(none.err.find("no lung found in " + input) != std::string::npos);
      CHECK_FALSE(fs::exists(out));
      CHECK_FALSE(fs::exists(out + ".tmp"));
    }
  }

  SUBCASE("a missing input and missing weights") {
    CHECK(run_segment(dir, dir.file("nothing") + " --out " + out + " --weights " + weights).exit_code == 1);
    const test::ProgramRun no_weights = run_segment(dir, dir.file("broken") + " --out " + out + " --weights " + dir.file("none"));
    CHECK(no_weights.exit_code == 1);
    CHECK(no_weights.err.find("none") != std::string::npos);
    CHECK(run_segment(dir, "--out " + out).exit_code == 2);
    // --weights may name a run's folder, as $COVIDRATE_WEIGHTS may.
    fs::create_directories(dir.file("run"));
    fs::copy_file(weights, dir.file("run/best.safetensors"));
    const test::ProgramRun folder = run_segment(
        dir, test::data_dir() + "/lung-masks-zenodo/coronacases_001_slice_98_ct.nii.gz --out " + dir.file("by-folder") +
                 " --weights " + dir.file("run"));
    CHECK_MESSAGE(folder.exit_code == 0, folder.err);
    CHECK(folder.err.find(dir.file("run/best.safetensors")) != std::string::npos);
    // Weights chosen through the environment that are not there: an error, not
    // the shipped weights standing in unannounced.
    const std::string ct = test::data_dir() + "/lung-masks-zenodo/coronacases_001_slice_98_ct.nii.gz";
    const test::ProgramRun env_weights =
        test::run_covidrate(dir, "segment " + ct + " --out " + out, "COVIDRATE_WEIGHTS=" + dir.file("gone"));
    CHECK(env_weights.exit_code == 1);
    CHECK(env_weights.err.find("$COVIDRATE_WEIGHTS is '" + dir.file("gone") + "'") != std::string::npos);
    CHECK_FALSE(fs::exists(out));
    // A weights file that does not fit the options: a short message that says which.
    const test::ProgramRun wide = run_segment(dir, ct + " --out " + out + " --weights " + weights + " --width 0.125");
    CHECK(wide.exit_code == 1);
    CHECK(wide.err.find("tensors do not match the model") != std::string::npos);
    CHECK(wide.err.find("--width") != std::string::npos);
    CHECK(wide.err.size() < 1200);
    // An output folder that cannot be made (under a file): refused before the
    // reading, naming the file in the way.
    test::write_bytes(dir.file("a-file"), {'x'});
    const test::ProgramRun under_file =
        run_segment(dir, ct + " --out " + dir.file("a-file/out") + " --weights " + weights);
    CHECK(under_file.exit_code == 1);
    CHECK(under_file.err.find(dir.file("a-file") + " is a file, not a folder") != std::string::npos);
    CHECK(under_file.err.find("weights") == std::string::npos);  // before the weights were even loaded
    // A folder that takes no new files (/sys refuses mkdir, root or not) is
    // refused before the work too, not after the network has run.
    const test::ProgramRun read_only = run_segment(dir, ct + " --out /sys/covidrate-out --weights " + weights);
    CHECK(read_only.exit_code == 1);
    CHECK(read_only.err.find("cannot write --out /sys/covidrate-out: /sys does not take new files") !=
          std::string::npos);
    CHECK(read_only.err.find("weights") == std::string::npos);
    CHECK_FALSE(fs::exists("/sys/covidrate-out"));
    // A filesystem error that does get through reads "PATH: reason", not the
    // standard library's "filesystem error: cannot ...": a symbolic link loop.
    fs::create_directories(dir.file("loop"));
    fs::create_symlink(dir.file("loop/b"), dir.file("loop/a"));
    fs::create_symlink(dir.file("loop/a"), dir.file("loop/b"));
    const test::ProgramRun loop = run_segment(dir, dir.file("loop") + " --out " + out + " --weights " + weights);
    CHECK(loop.exit_code == 1);
    CHECK(loop.err.find("Too many levels of symbolic links") != std::string::npos);
    CHECK(loop.err.find("filesystem error") == std::string::npos);
  }
}

// --prefetch on reads each next study while the current one runs (the default
// on a GPU): the same folders, failures and summary either way.
// Returns a's summary row without its input path and timings.
static std::string check_batch(const std::string& prefetch) {
  test::TempDir dir;
  const std::string weights = tiny_weights(dir), out = dir.file("out"), studies = dir.file("studies");
  fs::create_directories(studies);
  const fs::path zenodo = fs::path(test::data_dir()) / "lung-masks-zenodo";
  fs::copy_file(zenodo / "coronacases_001_slice_98_ct.nii.gz", fs::path(studies) / "a.nii.gz");
  // A study may also be a folder holding one NIfTI file (named after the folder).
  fs::create_directories(fs::path(studies) / "b");
  fs::copy_file(zenodo / "coronacases_001_slice_122_ct.nii.gz", fs::path(studies) / "b" / "scan.nii.gz");
  test::write_bytes(dir.file("studies/c.nii.gz"), test::garbage(4000, 7));  // a corrupt study
  const std::string args = studies + " --out " + out + " --weights " + weights + " --prefetch " + prefetch;
  test::ProgramRun run = run_segment(dir, args);
  CHECK(run.exit_code == 1);  // c failed, a and b are done
  CHECK(run.err.find("c failed") != std::string::npos);
  // The batch's progress after each study but the last: how many, the time a study takes, when it ends.
  CHECK(run.err.find("segment: 1 of 3 studies done, ") != std::string::npos);
  CHECK(run.err.find("segment: 2 of 3 studies done, ") != std::string::npos);
  CHECK(run.err.find(" a study, ETA ") != std::string::npos);
  CHECK(run.err.find("3 of 3 studies done") == std::string::npos);
  // Each study's line in the studies' order (with prefetch, a's folder is
  // written while b's network runs, and its line printed after).
  REQUIRE(run.out.find("a: opacity") != std::string::npos);
  REQUIRE(run.out.find("b: opacity") != std::string::npos);  // else the order below holds with b's line lost
  CHECK(run.out.find("a: opacity") < run.out.find("b: opacity"));
  CHECK(fs::exists(out + "/a/report.json"));
  CHECK(fs::exists(out + "/b/lesion_mask.nii.gz"));
  CHECK_FALSE(fs::exists(out + "/c"));
  CHECK_FALSE(fs::exists(out + "/c.tmp"));
  auto rows = [&] {
    std::ifstream in(out + "/summary.csv");
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  };
  REQUIRE(rows().size() == 3);
  CHECK(rows()[1].rfind("a,", 0) == 0);
  CHECK(rows()[2].rfind("b,", 0) == 0);
  // The figures: every field of a's row but its input path and timings (by the header's names).
  auto fields = [](const std::string& line) {
    std::vector<std::string> split(1);
    for (const char c : line) {
      if (c == ',') split.emplace_back();
      else split.back().push_back(c);
    }
    return split;
  };
  const std::vector<std::string> names = fields(rows()[0]), values = fields(rows()[1]);
  REQUIRE(names.size() == values.size());
  std::string figures;
  for (size_t k = 0; k < names.size(); ++k)
    if (names[k] != "input" && names[k] != "total_s" && names[k] != "slices_per_s") figures += values[k] + ",";

  // An interrupted run: b's folder never appeared, its .tmp did (with covidrate's mark).
  fs::remove_all(out + "/b");
  fs::create_directories(out + "/b.tmp");
  test::write_bytes(out + "/b.tmp/report.json", {'{'});
  test::write_bytes(out + "/b.tmp/.covidrate-partial", {});
  fs::remove(dir.file("studies/c.nii.gz"));
  // a as an earlier version left it: its summary without the last column.
  const std::string a_header = rows()[0].substr(0, rows()[0].rfind(','));
  const std::string a_old = a_header + "\n" + rows()[1].substr(0, rows()[1].rfind(',')) + "\n";
  test::write_bytes(out + "/a/summary.csv", std::vector<char>(a_old.begin(), a_old.end()));
  const auto a_time = fs::last_write_time(out + "/a/report.json");
  run = run_segment(dir, args);
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(fields(rows()[1]).size() == names.size());  // the new column there, empty
  CHECK(run.err.find("a already done, skipped") != std::string::npos);
  CHECK(fs::last_write_time(out + "/a/report.json") == a_time);
  CHECK(fs::exists(out + "/b/report.json"));
  CHECK_FALSE(fs::exists(out + "/b.tmp"));
  CHECK(rows().size() == 3);
  return figures;
}

TEST_CASE("batch: one folder per study, a summary for all, resume skips finished studies") {
  const std::string one_by_one = check_batch("off");
  const std::string prefetched = check_batch("on");
  CHECK(one_by_one.find(",") != std::string::npos);
  CHECK(prefetched == one_by_one);
}

// --prefetch reads ahead the studies whose folder did not exist at the start.
// One that appears during the run (another run into the same --out; here a
// symbolic link to a folder this run writes) is skipped: the study read for
// it must not be handed to the next study, whose folder would then hold the
// skipped study's masks and report.
TEST_CASE("batch with --prefetch: a study folder that appears during the run does not shift the studies read ahead") {
  test::TempDir dir;
  const std::string weights = tiny_weights(dir), out = dir.file("out"), studies = dir.file("studies");
  fs::create_directories(studies);
  const fs::path zenodo = fs::path(test::data_dir()) / "lung-masks-zenodo";
  for (const char* name : {"a", "b", "c", "d"})
    fs::copy_file(zenodo / "coronacases_001_slice_98_ct.nii.gz", fs::path(studies) / (std::string(name) + ".nii.gz"));
  fs::create_directories(out);
  fs::create_directory_symlink(out + "/a", out + "/c");  // dangling until a's folder is written
  const test::ProgramRun run = run_segment(dir, studies + " --out " + out + " --weights " + weights + " --prefetch on");
  CAPTURE(run.err);
  CHECK(run.exit_code == 0);
  CHECK(run.err.find("c already done, skipped") != std::string::npos);
  for (const std::string name : {"a", "b", "d"}) {
    CAPTURE(name);
    const json::Value report = json::parse(test::read_text_file(out + "/" + name + "/report.json"));
    CHECK(member(report, "study").text == name);
    CHECK(member(member(report, "input"), "path").text == studies + "/" + name + ".nii.gz");
  }
}

TEST_CASE("one run at a time into an output folder: a second is refused, naming the first") {
  // The first run: a batch (its folder is made at the start) of the 8-slice
  // sample with the shipped full-width network, seconds of work on the CPU.
  test::TempDir dir;
  const std::string studies = dir.file("studies"), out = dir.file("out");
  fs::create_directories(studies);
  fs::copy(test::source_dir() + "/examples/ricord-sample", studies + "/sample");
  const std::string first_log = dir.file("first.txt");
  REQUIRE(std::system((test::covidrate_program() + " segment " + studies + " --out " + out + " > " + first_log +
                       " 2>&1 &")
                          .c_str()) == 0);
  bool started = false;
  for (int i = 0; i < 600 && !started; ++i) {  // up to a minute for the weights to load
    started = fs::exists(out);
    if (!started) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(started);
  // The same folder spelled another way, while the first is at its network (about 7 s).
  const test::ProgramRun second = run_segment(dir, studies + " --out " + dir.path() + "/./out/");
  CHECK(second.exit_code == 1);
  CHECK(second.err.find("another covidrate run (process ") != std::string::npos);
  CHECK(second.err.find("is writing " + out) != std::string::npos);
  // The first is undisturbed; once it ends the folder is free again (its study is then skipped).
  bool ended = false;
  for (int i = 0; i < 1200 && !ended; ++i) {  // up to two minutes
    ended = test::read_text_file(first_log).find("summary in") != std::string::npos;
    if (!ended) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(ended);
  CHECK(test::read_text_file(first_log).find("1 study, 0 failed") != std::string::npos);
  const test::ProgramRun third = run_segment(dir, studies + " --out " + out);
  CHECK(third.exit_code == 0);
  CHECK(third.err.find("sample already done, skipped") != std::string::npos);
  // Where no lock can be had (the user's cache and the temporary folder both under a file), the run
  // goes on and says so.
  test::write_bytes(dir.file("not-a-folder"), {'x'});
  const test::ProgramRun unlocked = test::run_covidrate(
      dir, "segment " + studies + " --out " + out,
      "XDG_CACHE_HOME=" + dir.file("not-a-folder") + " TMPDIR=" + dir.file("not-a-folder"));
  CHECK(unlocked.exit_code == 0);
  CHECK(unlocked.err.find("segment: note: running without the lock that keeps a second run out of " + out) !=
        std::string::npos);
}

TEST_CASE("a sagittal stack is read as axial slices, exactly, and its masks go back on its own grid") {
  // The sample's 8 axial slices stored as 512 sagittal ones (x <-> z: every
  // voxel at its place in the patient, only the storage order changed). It
  // used to read 0.00 % opacity (the network saw sagittal slices), then was
  // refused; now it gives the axial study's figures and masks exactly.
  test::TempDir dir;
  const std::string weights = tiny_weights(dir);
  const std::string sample = test::source_dir() + "/examples/ricord-sample";
  const data::AxisOrder swap_x_z{2, 1, 0};
  const data::Volume axial = data::read_any(sample);
  const data::Volume sagittal = data::permute_axes(axial, swap_x_z);
  REQUIRE(data::axial_axis_order(sagittal) != data::kSameAxes);
  CHECK(data::permute_axes(sagittal, data::inverse(swap_x_z)).voxels == axial.voxels);
  data::write_nifti(dir.file("sagittal.nii.gz"), sagittal, data::NiftiType::Float32);

  const test::ProgramRun a = run_segment(dir, sample + " --out " + dir.file("a") + " --weights " + weights +
                                                  " --threshold 0.05 --save-lungs");
  REQUIRE_MESSAGE(a.exit_code == 0, a.err);
  const test::ProgramRun s = run_segment(dir, dir.file("sagittal.nii.gz") + " --out " + dir.file("s") +
                                                  " --weights " + weights + " --threshold 0.05 --save-lungs");
  REQUIRE_MESSAGE(s.exit_code == 0, s.err);
  const auto both_lungs = [&](const std::string& folder) {
    const json::Value report = json::parse(test::read_text_file(dir.file(folder + "/report.json")));
    return member(member(report, "study_figures"), "both_lungs");
  };
  CHECK(number(both_lungs("a"), "lesion_voxels") > 0);
  CHECK(number(both_lungs("s"), "lesion_voxels") == number(both_lungs("a"), "lesion_voxels"));
  CHECK(number(both_lungs("s"), "lung_voxels") == number(both_lungs("a"), "lung_voxels"));
  for (const char* mask : {"lesion_mask.nii.gz", "lungs.nii.gz"}) {
    CAPTURE(mask);
    const data::Volume on_input = data::read_nifti(dir.file(std::string("s/") + mask));
    test::check_same_geometry(on_input, sagittal);  // the input's own grid
    CHECK(data::permute_axes(on_input, swap_x_z).voxels == data::read_nifti(dir.file(std::string("a/") + mask)).voxels);
  }
}

TEST_CASE("a series with a missing slice: a warning on the terminal, in report.json and in report.html") {
  test::TempDir dir;
  const std::string weights = tiny_weights(dir), series = dir.file("series"), out = dir.file("out");
  fs::create_directories(series);
  for (const auto& e : fs::directory_iterator(test::source_dir() + "/examples/ricord-sample"))
    if (e.path().extension() == ".dcm" && e.path().filename() != "1-124.dcm")  // one from the middle
      fs::copy_file(e.path(), fs::path(series) / e.path().filename());
  const test::ProgramRun run = run_segment(dir, series + " --out " + out + " --weights " + weights);
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.err.find("segment: warning: series: slice spacing varies from 1.25 to 2.5 mm") != std::string::npos);
  const json::Value report = json::parse(test::read_text_file(out + "/report.json"));
  const json::Value& warnings = member(member(report, "input"), "warnings");
  REQUIRE(warnings.items.size() == 1);
  CHECK(warnings.items[0].text.find("missing slices?") != std::string::npos);
  CHECK(test::read_text_file(out + "/report.html").find("Warning:") != std::string::npos);
  // The whole series: no warning.
  const test::ProgramRun whole =
      run_segment(dir, test::source_dir() + "/examples/ricord-sample --out " + dir.file("whole") + " --weights " + weights);
  REQUIRE_MESSAGE(whole.exit_code == 0, whole.err);
  CHECK(whole.err.find("warning") == std::string::npos);
  CHECK(member(member(json::parse(test::read_text_file(dir.file("whole/report.json"))), "input"), "warnings")
            .items.empty());
}

TEST_CASE("plan_inputs: batch folders, the output inside them, mixed folders and clashing picture names") {
  // Planning reads file heads only: a PNG signature or a NIfTI header size is enough.
  test::TempDir dir;
  const auto png = [&](const std::string& name) {
    test::write_bytes(dir.file(name), {'\x89', 'P', 'N', 'G', '\r', '\n', '\x1a', '\n', 0, 0});
  };
  const auto nifti = [&](const std::string& name) { test::write_bytes(dir.file(name), {'\x5c', 1, 0, 0, 0, 0}); };
  for (const char* folder : {"batch/empty", "batch/two", "batch/pics", "batch/out/x", "mixed", "clash"})
    fs::create_directories(dir.file(folder));
  nifti("batch/a.nii");
  nifti("batch/two/x.nii");
  nifti("batch/two/y.nii");
  png("batch/pics/p.png");
  nifti("batch/out/x/done.nii");  // what an earlier run wrote inside the batch folder

  const data::InputPlan plan = data::plan_inputs({dir.file("batch")}, dir.file("batch/out"));
  CHECK(plan.batch);
  REQUIRE(plan.studies.size() == 3);  // a, pics, two; not out, not empty
  CHECK(plan.studies[0].name == "a");
  CHECK(plan.studies[1].name == "pics");
  CHECK(plan.studies[1].kind == data::StudyKind::Pictures);
  CHECK(plan.studies[2].name == "two");
  CHECK(plan.studies[2].refusal.find("holds 2 NIfTI files") != std::string::npos);  // fails alone, with the reason
  CHECK(plan.passed_over == std::vector<std::string>{dir.file("batch/empty")});
  // Without --out given, "out" would be a study of its own (a DICOM-looking folder).
  CHECK(data::plan_inputs({dir.file("batch")}).studies.size() == 4);

  png("mixed/p.png");
  nifti("mixed/c.nii");
  CHECK_THROWS_WITH_AS(data::plan_inputs({dir.file("mixed")}), doctest::Contains("holds pictures beside 1 NIfTI"), Error);
  png("clash/0.png");
  test::write_bytes(dir.file("clash/0.jpg"), {'\xff', '\xd8', '\xff', 0});
  CHECK_THROWS_WITH_AS(data::plan_inputs({dir.file("clash")}), doctest::Contains("share the name '0'"), Error);
  CHECK_THROWS_WITH_AS(data::plan_inputs({dir.file("clash/0.png"), dir.file("clash/0.jpg")}),
                       doctest::Contains("share the name '0'"), Error);
  // A study named as another's folder while it is written (DIR/a.tmp): refused,
  // not skipped as done or removed as a leftover of an interrupted run.
  fs::create_directories(dir.file("tmpclash"));
  nifti("tmpclash/a.nii");
  nifti("tmpclash/a.tmp.nii");
  CHECK_THROWS_WITH_AS(data::plan_inputs({dir.file("tmpclash")}), doctest::Contains("named 'a' and 'a.tmp'"), Error);
  fs::remove(dir.file("tmpclash/a.nii"));
  CHECK(data::plan_inputs({dir.file("tmpclash")}).studies.size() == 1);  // alone, a.tmp is a name like any other
}

TEST_CASE("plan_inputs: series folders of one DICOM study are one study; folders of different studies a batch") {
  // A PACS or CD export keeps each series of a study in a folder of its own
  // (STUDY/SE1, STUDY/SE2, ...): one study, whose series the reader chooses.
  test::TempDir dir;
  std::vector<fs::path> ricord;
  for (const auto& e : fs::directory_iterator(test::source_dir() + "/examples/ricord-sample"))
    if (e.path().extension() == ".dcm") ricord.push_back(e.path());
  std::sort(ricord.begin(), ricord.end());
  REQUIRE(ricord.size() == 8);
  for (size_t k = 0; k < ricord.size(); ++k) {
    const std::string folder = dir.file(k < 4 ? "study/SE1" : "study/SE2");
    fs::create_directories(folder);
    fs::copy_file(ricord[k], folder + "/" + ricord[k].filename().string());
  }
  fs::create_directories(dir.file("study/REPORTS"));
  test::write_bytes(dir.file("study/REPORTS/readme.txt"), {'h', 'i'});
  const data::InputPlan one = data::plan_inputs({dir.file("study")});
  CHECK_FALSE(one.batch);
  REQUIRE(one.studies.size() == 1);
  CHECK(one.studies[0].kind == data::StudyKind::DicomSeries);
  CHECK(data::read_dicom_series(one.studies[0].paths.at(0)).nz == 8);
  // Another study's series beside them: a batch of folders, each its own study.
  fs::create_directories(dir.file("study/OTHER"));
  const std::string healthy = test::data_dir() + "/ct-healthy-tcga";
  for (const auto& e : fs::directory_iterator(healthy)) {
    fs::copy_file(e.path(), dir.file("study/OTHER/" + e.path().filename().string()));
    break;
  }
  const data::InputPlan batch = data::plan_inputs({dir.file("study")});
  CHECK(batch.batch);
  CHECK(batch.studies.size() == 3);
}
