// `covidrate segment` end to end on real CT: a DICOM series (10 slices of the
// RICORD volume), a NIfTI slice, MedSeg pictures and a batch folder. The
// network is a width-1/16 COVID-Rate with its deterministic initial weights:
// these tests check plumbing, alignment with the input and the figures'
// consistency, not accuracy. Plus the figures, the plot and the pipeline's
// layout permutation on synthetic volumes.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

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

// The options of the small synthetic studies below: 64 x 64 network inputs on the CPU.
data::SegmentOptions small_cpu_options(int64_t batch, double threshold) {
  data::SegmentOptions options;
  options.threshold = threshold;
  options.batch = batch;
  options.size = 64;
  options.device = Device::CPU;
  return options;
}

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

// An n x n x nz CT of air (-1000 HU) for the synthetic-volume tests to draw in.
data::Volume air_ct(int64_t n, int64_t nz) {
  data::Volume ct;
  ct.nx = ct.ny = n;
  ct.nz = nz;
  ct.voxels.assign(ct.voxel_count(), -1000.f);
  return ct;
}

// A 96 x 96 body of soft tissue with two round lungs per slice, five slices,
// the lungs growing and brightening from slice to slice (so that every slice
// gives the network something different).
data::Volume five_slices_of_growing_lungs() {
  data::Volume ct = air_ct(96, 5);
  for (int64_t z = 0; z < ct.nz; ++z)
    for (int64_t y = 0; y < ct.ny; ++y)
      for (int64_t x = 0; x < ct.nx; ++x) {
        if ((x - 48) * (x - 48) + (y - 48) * (y - 48) < 42 * 42) ct.at(x, y, z) = 40.f;
        const int64_t r = 10 + 2 * z;
        for (int64_t cx : {30, 66})
          if ((x - cx) * (x - cx) + (y - 44) * (y - 44) < r * r) ct.at(x, y, z) = -850.f + 60.f * float(z);
      }
  return ct;
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
  if (number(member(r, "study_figures"), "slices_with_lung") > 0) CHECK(number(stages, "forward") > 0);
  // On the CPU nothing is searched; on CUDA the count is what cuDNN timed.
  if (member(r, "device").text == "cpu") CHECK(number(r, "algorithm_searches") == 0);
  else CHECK(number(r, "algorithm_searches") >= 0);
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

TEST_CASE("segment a NIfTI slice: the mask has the input's geometry; threshold 1 gives no lesion") {
  test::TempDir dir;
  const std::string weights = tiny_weights(dir), out = dir.file("out");
  const std::string nifti =
      (fs::path(test::data_dir()) / "lung-masks-zenodo" / "coronacases_001_slice_110_ct.nii.gz").string();
  // "--out DIR/" is DIR (it used to be written as DIR/.tmp, then fail to rename).
  const test::ProgramRun run =
      run_segment(dir, nifti + " --out " + out + "/ --weights " + weights + " --threshold 1 --save-lungs");
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
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
  const std::vector<std::string> stems = {"0", "1", "10"};
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
  CHECK(test::read_text_file(out + "/summary.csv").ends_with(",\n"));  // its column empty
  for (const std::string& s : stems) {
    const data::Volume picture = data::read_image((images / (s + ".jpg")).string());
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

  SUBCASE("no lung anywhere: refused, not reported as 0 % opacity") {
    // nibabel's brain MR sample, read as a volume like any NIfTI; an apical CT
    // slice whose lung (0.2 % of the picture) is below what counts as lung; and
    // a picture of noise, which used to read 99.99 % opacity (lung everywhere).
    std::vector<uint8_t> noise(300 * 300);
    uint32_t state = 1;
    for (uint8_t& v : noise) v = static_cast<uint8_t>((state = state * 1664525u + 1013904223u) >> 24);
    data::write_png_gray(dir.file("noise.png"), noise.data(), 300, 300);
    for (const std::string& input : {test::data_dir() + "/nifti-samples/anatomical.nii",
                                    test::data_dir() + "/lung-masks-zenodo/coronacases_008_slice_26_ct.nii.gz",
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

  // An interrupted run: b's folder never appeared, its .tmp did.
  fs::remove_all(out + "/b");
  fs::create_directories(out + "/b.tmp");
  test::write_bytes(out + "/b.tmp/report.json", {'{'});
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

TEST_CASE("a slice without lung is not segmented and gets an empty mask") {
  // Two slices: air everywhere, and a disc of soft tissue (a body without lungs).
  data::Volume ct = air_ct(96, 2);
  for (int64_t y = 0; y < ct.ny; ++y)
    for (int64_t x = 0; x < ct.nx; ++x)
      if ((x - 48) * (x - 48) + (y - 48) * (y - 48) < 40 * 40) ct.at(x, y, 1) = 40.f;
  CovidRateNet net(NetConfig{.width = 0.0625, .cpb = true, .seed = 3});
  net.set_training(false);
  const data::SegmentOptions options = small_cpu_options(2, 0.0);
  const data::Segmentation seg = data::segment_volume(ct, net, options);
  CHECK(seg.slices_segmented == 0);
  CHECK(std::all_of(seg.lesions.voxels.begin(), seg.lesions.voxels.end(), [](float v) { return v == 0.f; }));
  const data::StudyFigures f = data::measure(seg.lesions, seg.lungs);
  CHECK(f.both.opacity_percent == 0);
  CHECK(f.infected_slices == 0);
}

TEST_CASE("batch_shape: the smallest power of two that holds the slices, at most the batch") {
  CHECK(data::batch_shape(16, 16) == 16);
  CHECK(data::batch_shape(3, 16) == 4);
  CHECK(data::batch_shape(9, 16) == 16);
  CHECK(data::batch_shape(5, 6) == 6);  // a batch that is not a power of two is a shape of its own
  CHECK(data::batch_shape(1, 8) == 1);
  CHECK_THROWS_AS(data::batch_shape(9, 8), Error);
}

TEST_CASE("segment_volume with bucketed batch shapes: blank slices fill the last batch, the results do not change") {
  // Five slices with lungs of different sizes, batches of 3: 3 + 2.
  const data::Volume ct = five_slices_of_growing_lungs();
  CovidRateNet net(NetConfig{.width = 0.0625, .cpb = true, .seed = 3});
  net.set_training(false);
  data::SegmentOptions options = small_cpu_options(3, 0.5);
  // The batch sizes the convolutions saw, from the op profile's rows.
  const auto batches_seen = [] {
    std::set<std::string> seen;
    for (const profile::OpTime& t : profile::collect())
      if (t.op == "conv2d_forward") seen.insert(t.input.substr(0, t.input.find(',')));
    return seen;
  };
  profile::set_enabled(true);
  profile::reset();
  const data::Segmentation as_they_come = data::segment_volume(ct, net, options);
  const std::set<std::string> varying = batches_seen();
  options.bucketed_batch_shape = true;
  profile::reset();
  const data::Segmentation fixed = data::segment_volume(ct, net, options);
  const std::set<std::string> bucketed = batches_seen();
  profile::set_enabled(false);
  REQUIRE(fixed.slices_segmented == 5);
  CHECK(varying == std::set<std::string>{"[2", "[3"});
  CHECK(bucketed == std::set<std::string>{"[3", "[2"});  // 2 is a power of two: no blank
  CHECK(fixed.probability.voxels == as_they_come.probability.voxels);
  CHECK(fixed.lesions.voxels == as_they_come.lesions.voxels);
  CHECK(std::count(fixed.probability.voxels.begin(), fixed.probability.voxels.end(), 0.f) < ct.voxel_count());

  // A study with fewer slices than a batch: 5 slices run as 8 (3 blanks),
  // whether the batch is 8 or 16.
  for (const int64_t batch : {8, 16}) {
    options.batch = batch;
    profile::set_enabled(true);
    profile::reset();
    const data::Segmentation small = data::segment_volume(ct, net, options);
    CHECK(batches_seen() == std::set<std::string>{"[8"});
    profile::set_enabled(false);
    CHECK(small.probability.voxels == as_they_come.probability.voxels);
  }
  // Batches of 4: 4 + 1, no blanks. (Not compared with the batches of 3 + 2:
  // the CPU's convolutions split a batch of one among threads differently, so
  // its sums may round differently.)
  options.batch = 4;
  profile::set_enabled(true);
  profile::reset();
  const data::Segmentation fours = data::segment_volume(ct, net, options);
  CHECK(batches_seen() == std::set<std::string>{"[4", "[1"});
  profile::set_enabled(false);
  CHECK(fours.slices_segmented == 5);
}

TEST_CASE("segment_volume queuing a batch ahead (the GPU's order) gives what collecting each batch at once gives") {
  // On a GPU batch i + 1 is launched before batch i is collected; run that
  // order on the CPU: every slice put back once, certainty where it belongs,
  // progress counting up to the end, the same volumes.
  const data::Volume ct = five_slices_of_growing_lungs();
  CovidRateNet net(NetConfig{.width = 0.0625, .cpb = true, .seed = 5});
  net.set_training(false);
  for (const int64_t batch : {1, 2, 8}) {
    CAPTURE(batch);
    data::SegmentOptions options = small_cpu_options(batch, 0.5);
    std::vector<std::pair<int64_t, int64_t>> reported;
    options.progress = [&](int64_t done, int64_t total) { reported.emplace_back(done, total); };
    options.queue_ahead = false;
    const data::Segmentation at_once = data::segment_volume(ct, net, options);
    const auto at_once_reports = reported;
    reported.clear();
    options.queue_ahead = true;
    const data::Segmentation ahead = data::segment_volume(ct, net, options);
    REQUIRE(ahead.slices_segmented == 5);
    CHECK(ahead.probability.voxels == at_once.probability.voxels);
    CHECK(ahead.lesions.voxels == at_once.lesions.voxels);
    CHECK(std::count(ahead.probability.voxels.begin(), ahead.probability.voxels.end(), 0.f) < ct.voxel_count());
    REQUIRE(ahead.certainty.size() == at_once.certainty.size());
    for (size_t z = 0; z < ahead.certainty.size(); ++z) {
      CHECK(std::isfinite(ahead.certainty[z]));
      CHECK(ahead.certainty[z] == at_once.certainty[z]);
    }
    CHECK(reported == at_once_reports);  // 0, then each batch's end, up to 5 of 5
    REQUIRE(!reported.empty());
    CHECK(reported.back() == std::pair<int64_t, int64_t>{5, 5});
    CHECK(ahead.seconds.network_stages.device_wait >= 0);
  }
}

TEST_CASE("segment_volume queuing ahead: an error in a later batch comes out cleanly, and the next run is whole") {
  // The weights are reloaded from the progress report of the first batch, so
  // the prepared inference form goes stale and the forward of a later batch
  // refuses to run while the batch before it is still queued: the error must
  // reach the caller (no hang, no terminate from a thread), and a run after
  // it, with the form prepared again, must give the volumes of a clean run.
  const data::Volume ct = five_slices_of_growing_lungs();
  CovidRateNet net(NetConfig{.width = 0.0625, .cpb = true, .seed = 7});
  net.set_training(false);
  net.prepare_inference(DType::F32);
  data::SegmentOptions options = small_cpu_options(1, 0.5);
  options.queue_ahead = true;
  const data::Segmentation clean = data::segment_volume(ct, net, options);
  REQUIRE(clean.slices_segmented == 5);

  const std::map<std::string, Tensor> weights = net.parameters().named_tensors();
  options.progress = [&](int64_t done, int64_t) {
    if (done == 1) net.parameters().load(weights, "the same weights");  // the form is now stale
  };
  try {
    (void)data::segment_volume(ct, net, options);
    FAIL("no error from the stale inference form");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("prepare") != std::string::npos);
  }
  options.progress = {};
  net.prepare_inference(DType::F32);
  const data::Segmentation again = data::segment_volume(ct, net, options);
  CHECK(again.probability.voxels == clean.probability.voxels);
  CHECK(again.lesions.voxels == clean.lesions.voxels);
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

TEST_CASE("a prepared study keeps the CT's grid only; its pictures come from the input domain, pixel for pixel") {
  // prepare_study drops the CT's voxels once the lungs are extracted (segment's
  // peak memory: 2096 -> 1877 MB for the 255-slice RICORD series); the
  // montage is then drawn from the input domain, which must give exactly what
  // the CT gave: for Hounsfield units the same window, for pictures the same clamp.
  const std::string dicom = test::source_dir() + "/examples/ricord-sample";
  const std::string picture = test::data_dir() + "/medseg-semiseg/train/images/0.jpg";
  for (const std::string& path : {dicom, picture}) {
    CAPTURE(path);
    const data::InputPlan plan = data::plan_inputs({path});
    REQUIRE(plan.studies.size() == 1);
    const data::PreparedStudy prepared = data::prepare_study(plan.studies[0]);
    REQUIRE(prepared.parts.size() == 1);
    const data::StudyPart& part = prepared.parts[0];
    CHECK(part.ct.voxels.empty());
    CHECK(part.ct.nz >= 1);
    REQUIRE(part.prepared.domain.voxel_count() == part.ct.voxel_count());
    data::Volume ct = data::read_any(path);
    if (path == picture) data::set_medseg_picture_orientation(ct);  // as segment reads a picture
    REQUIRE(ct.voxel_count() == part.ct.voxel_count());
    for (int64_t z = 0; z < ct.nz; ++z) {
      const data::RgbImage from_ct = data::grey_slice(ct, z), from_domain = data::grey_slice(part.prepared.domain, z);
      CHECK(from_ct.rgb == from_domain.rgb);
    }
  }
}

TEST_CASE("the montage's tiles are in the radiological display whatever order the voxels are stored in") {
  // One 8 x 6 slice of made-up anatomy stored three ways: as DICOM stores it
  // (x towards the patient's left, y towards posterior), as a RAS NIfTI does (both
  // axes reversed: it came out upside down and mirrored), and transposed. The
  // tile must be the same; for the DICOM order, the slice as stored.
  constexpr int64_t nx = 8, ny = 6;
  data::Volume lps;
  lps.nx = nx, lps.ny = ny, lps.nz = 1;
  lps.voxels.resize(nx * ny);
  data::LabelVolume lungs = data::same_grid<uint8_t>(lps, data::Intensity::Label);
  data::LabelVolume lesions = lungs;
  for (int64_t y = 0; y < ny; ++y)
    for (int64_t x = 0; x < nx; ++x) {
      lps.at(x, y, 0) = static_cast<float>(-1000 + 37 * x + 91 * y);  // no symmetry
      lungs.at(x, y, 0) = x < 3 ? data::kRightLung : x > 4 ? data::kLeftLung : data::kNoLung;
      lesions.at(x, y, 0) = x == 1 && y >= 2;
    }
  const auto stored = [&](bool reverse, bool transpose) {
    data::Volume ct = data::same_grid(lps, lps.intensity);
    data::LabelVolume l = data::same_grid<uint8_t>(lps, data::Intensity::Label), m = l;
    if (transpose) {
      std::swap(ct.nx, ct.ny), std::swap(l.nx, l.ny), std::swap(m.nx, m.ny);
      for (data::VolumeGrid* g : {static_cast<data::VolumeGrid*>(&ct), static_cast<data::VolumeGrid*>(&l),
                                  static_cast<data::VolumeGrid*>(&m)})
        g->row_dir = {0, 1, 0}, g->col_dir = {1, 0, 0};
    }
    if (reverse)
      for (data::VolumeGrid* g : {static_cast<data::VolumeGrid*>(&ct), static_cast<data::VolumeGrid*>(&l),
                                  static_cast<data::VolumeGrid*>(&m)})
        g->row_dir = {-g->row_dir[0], -g->row_dir[1], 0}, g->col_dir = {-g->col_dir[0], -g->col_dir[1], 0};
    for (int64_t y = 0; y < ny; ++y)
      for (int64_t x = 0; x < nx; ++x) {
        const int64_t sx = reverse ? nx - 1 - x : x, sy = reverse ? ny - 1 - y : y;  // patient position
        const int64_t i = transpose ? sx * ny + sy : sy * nx + sx;                 // where it is stored
        ct.voxels[i] = lps.at(x, y, 0), l.voxels[i] = lungs.at(x, y, 0), m.voxels[i] = lesions.at(x, y, 0);
      }
    return data::affected_tile(ct, l, m, 0);
  };
  const data::RgbImage as_dicom = data::affected_tile(lps, lungs, lesions, 0);
  CHECK(as_dicom.rgb == stored(false, false).rgb);
  CHECK(as_dicom.rgb == stored(true, false).rgb);
  CHECK(as_dicom.rgb == stored(false, true).rgb);
  CHECK(as_dicom.rgb == stored(true, true).rgb);
  // The DICOM order is drawn as stored: the right lung's outline (green) on the
  // picture's left, the lesion's (red) inside it, the middle column grey.
  const data::RgbImage plain = data::grey_slice(lps, 0);
  for (const int64_t y : {int64_t{0}, ny - 1}) {
    CHECK(as_dicom.rgb[3 * (y * nx + 3 + 1) + 1] == plain.rgb[3 * (y * nx + 3 + 1) + 1]);
    CHECK(as_dicom.rgb[3 * (y * nx + 0)] < as_dicom.rgb[3 * (y * nx + 0) + 1]);  // green: right lung, left side
  }
  CHECK(as_dicom.rgb[3 * (3 * nx + 1)] > as_dicom.rgb[3 * (3 * nx + 1) + 1]);  // red: the lesion
}

TEST_CASE("figures: areas, volumes, opacity per lung and the infected-slice rule") {
  data::LabelVolume lungs, lesions;
  for (data::LabelVolume* v : {&lungs, &lesions}) {
    v->nx = 10, v->ny = 10, v->nz = 2;
    v->spacing = {0.5, 0.5, 2.0};
    v->voxels.assign(200, 0);
  }
  // Slice 0: 40 px right lung, 40 px left lung; 2 lesion px in the right lung (2.5%).
  // Slice 1: 100 px left lung; no lesion.
  for (int64_t i = 0; i < 40; ++i) lungs.voxels[i] = data::kRightLung, lungs.voxels[60 + i] = data::kLeftLung;
  for (int64_t i = 100; i < 200; ++i) lungs.voxels[i] = data::kLeftLung;
  lesions.voxels[3] = lesions.voxels[4] = 1;
  const data::StudyFigures f = data::measure(lesions, lungs);
  REQUIRE(f.slices.size() == 2);
  CHECK(f.slices[0].lesion_pixels == 2);
  CHECK(f.slices[0].lung_pixels == 80);
  CHECK(f.slices[0].lesion_mm2 == doctest::Approx(0.5));
  CHECK(f.slices[0].infection_rate == doctest::Approx(2.0 / 80));
  CHECK(f.slices[0].infected);
  CHECK_FALSE(f.slices[1].infected);
  CHECK(f.infected_slices == 1);
  CHECK(f.right.opacity_percent == doctest::Approx(5.0));
  CHECK(f.left.opacity_percent == 0);
  CHECK(f.both.opacity_percent == doctest::Approx(100.0 * 2 / 180));
  CHECK(f.both.lung_ml == doctest::Approx(180 * 0.5 * 0.5 * 2.0 / 1000));
  CHECK(data::most_affected_slices(f, 6) == std::vector<int64_t>{0});
  CHECK_FALSE(f.high_opacity_known);  // no input domain given: not in HU

  // With the input domain of an HU volume: lesion voxels at -200 HU or more
  // are high opacity, -201 HU is not (the threshold compares equal at -200).
  data::Volume ct;
  ct.nx = 10, ct.ny = 10, ct.nz = 2;
  ct.spacing = lungs.spacing;
  ct.intensity = data::Intensity::HounsfieldUnits;
  ct.voxels.assign(200, -800.f);
  ct.voxels[3] = -200.f, ct.voxels[4] = -201.f;
  ct.voxels[5] = 40.f;  // dense but no lesion there
  const data::Volume domain = data::to_input_domain(ct);
  const data::StudyFigures h = data::measure(lesions, lungs, &domain);
  CHECK(h.high_opacity_known);
  CHECK(h.right.high_opacity_voxels == 1);
  CHECK(h.both.high_opacity_voxels == 1);
  CHECK(h.right.high_opacity_percent == doctest::Approx(100.0 / 40));
  CHECK(h.both.high_opacity_ml == doctest::Approx(0.5 * 0.5 * 2.0 / 1000));
  CHECK(h.left.high_opacity_percent == 0);
  CHECK(h.slices[0].high_opacity_pixels == 1);
  CHECK(h.slices[1].high_opacity_pixels == 0);
  // The plot draws a bar's high-opacity share dark at its foot, only with HU figures.
  auto dark_pixels = [](const data::RgbImage& image) {
    int64_t count = 0;
    for (size_t p = 0; p + 2 < image.rgb.size(); p += 3)
      count += image.rgb[p] == 110 && image.rgb[p + 1] == 0 && image.rgb[p + 2] == 0;
    return count;
  };
  CHECK(dark_pixels(data::infection_rate_plot(h, 200, 100)) > 0);
  CHECK(dark_pixels(data::infection_rate_plot(f, 200, 100)) == 0);

  const data::RgbImage plot = data::infection_rate_plot(f, 200, 100);
  CHECK(plot.width == 200);
  CHECK(plot.height == 100);
  // The infected slice's bar is red somewhere in the left half.
  bool red = false;
  for (int64_t y = 0; y < plot.height; ++y)
    for (int64_t x = 0; x < plot.width / 2; ++x) {
      const uint8_t* p = &plot.rgb[(y * plot.width + x) * 3];
      red |= p[0] > 200 && p[1] < 80 && p[2] < 80;
    }
  CHECK(red);
}

TEST_CASE("the network layout permutation follows the direction vectors") {
  data::Volume v;
  v.nx = 4, v.ny = 3, v.nz = 1;
  v.voxels.assign(12, 0.f);
  int64_t nx = 0, ny = 0;
  SUBCASE("a radiological axial slice is transposed, as the training pictures are") {
    const std::vector<int64_t> order = data::network_layout_order(v, nx, ny);
    CHECK(nx == 3);
    CHECK(ny == 4);
    CHECK(order[1] == 4);  // network (x=1, y=0) = slice (x=0, y=1)
    CHECK(std::set<int64_t>(order.begin(), order.end()).size() == 12);
  }
  SUBCASE("a picture in the training layout is left as it is") {
    data::set_medseg_picture_orientation(v);
    const std::vector<int64_t> order = data::network_layout_order(v, nx, ny);
    CHECK(nx == 4);
    for (int64_t p = 0; p < 12; ++p) CHECK(order[p] == p);
  }
}

// A box's columns [x0, x0 + nx) and rows [y0, y0 + ny), in one comparison.
std::string box_text(const data::CropBox& b) {
  std::ostringstream os;
  os << b.x0 << "+" << b.nx << ", " << b.y0 << "+" << b.ny;
  return os.str();
}

TEST_CASE("the network looks at the lungs' bounding box, as the training pictures are cut") {
  // A 20 x 10 slice with lung at columns 6..13, rows 2..5.
  std::vector<float> lungs(200, 0.f);
  for (int64_t y = 2; y <= 5; ++y)
    for (int64_t x = 6; x <= 13; ++x) lungs[y * 20 + x] = x < 10 ? 1.f : 2.f;
  // Tight; then a quarter of the box per side (8 * 0.25 = 2 columns, 4 * 0.25 = 1 row);
  // then a whole box per side, clamped to the slice.
  CHECK(box_text(data::lung_crop_box(lungs.data(), 20, 10, 0.0)) == "6+8, 2+4");
  CHECK(box_text(data::lung_crop_box(lungs.data(), 20, 10, 0.25)) == "4+12, 1+6");
  CHECK(box_text(data::lung_crop_box(lungs.data(), 20, 10, 1.0)) == "0+20, 0+10");
  // No lung, or a negative margin: the whole slice.
  const std::vector<float> none(200, 0.f);
  CHECK(box_text(data::lung_crop_box(none.data(), 20, 10, 0.02)) == "0+20, 0+10");
  CHECK(box_text(data::lung_crop_box(lungs.data(), 20, 10, -1.0)) == "0+20, 0+10");
}

TEST_CASE("segment_volume: outside the lungs' box the probability is 0; without the cut it is not") {
  // A body disc with two dark lungs in its upper half, in a wide field of view.
  data::Volume ct = air_ct(128, 1);
  for (int64_t y = 0; y < ct.ny; ++y)
    for (int64_t x = 0; x < ct.nx; ++x) {
      const int64_t dx = x - 64, dy = y - 64;
      if (dx * dx + dy * dy < 56 * 56) ct.at(x, y, 0) = 40.f;
      for (int64_t cx : {40, 88})
        if ((x - cx) * (x - cx) * 4 + (y - 50) * (y - 50) * 9 < 18 * 18 * 4) ct.at(x, y, 0) = -850.f;
    }
  CovidRateNet net(NetConfig{.width = 0.0625, .cpb = true, .seed = 3});
  net.set_training(false);
  data::SegmentOptions options = small_cpu_options(1, 0.0);
  const data::Segmentation cut = data::segment_volume(ct, net, options);
  REQUIRE(cut.slices_segmented == 1);
  int64_t nx = 0, ny = 0;
  const std::vector<int64_t> order = data::network_layout_order(ct, nx, ny);
  std::vector<float> lung_layout(order.size());
  for (size_t p = 0; p < order.size(); ++p) lung_layout[p] = cut.lungs.voxels[order[p]];
  const data::CropBox box = data::lung_crop_box(lung_layout.data(), nx, ny, options.crop_margin);
  CHECK(box.nx < nx / 2 + 8);  // the cut is much smaller than the slice
  int64_t outside = 0, outside_nonzero = 0, inside_nonzero = 0;
  for (int64_t y = 0; y < ny; ++y)
    for (int64_t x = 0; x < nx; ++x) {
      const bool in = x >= box.x0 && x < box.x0 + box.nx && y >= box.y0 && y < box.y0 + box.ny;
      const float p = cut.probability.voxels[order[y * nx + x]];
      outside += !in;
      outside_nonzero += !in && p != 0.f;
      inside_nonzero += in && p != 0.f;
    }
  CHECK(outside > 0);
  CHECK(outside_nonzero == 0);
  CHECK(inside_nonzero == box.nx * box.ny);  // a sigmoid is never exactly 0
  options.crop_margin = -1;
  const data::Segmentation whole = data::segment_volume(ct, net, options);
  CHECK(std::count(whole.probability.voxels.begin(), whole.probability.voxels.end(), 0.f) == 0);

  // One lung found (the other filled with tissue): no cut, whatever the margin.
  for (int64_t y = 0; y < ct.ny; ++y)
    for (int64_t x = 0; x < 64; ++x)
      if (ct.at(x, y, 0) == -850.f) ct.at(x, y, 0) = 40.f;
  options.crop_margin = 0.02;
  const data::Segmentation one_lung = data::segment_volume(ct, net, options);
  REQUIRE(one_lung.slices_segmented == 1);
  CHECK(std::count(one_lung.lungs.voxels.begin(), one_lung.lungs.voxels.end(), 0.f) < ct.voxel_count());
  CHECK(std::count(one_lung.probability.voxels.begin(), one_lung.probability.voxels.end(), 0.f) == 0);
}
