// Pseudo-labels for the unsupervised enhancement (data/pseudo_labels.h) on real
// unlabelled slices (medseg-semiseg/unlabeled, from the Zenodo scanners): the
// certainty index of each prediction is the op's on the network's output, the
// kept slices are the most certain, the folder is a training set train reads,
// a picture that is not a chest is never kept, and bad input (two pictures of
// one name, an --out under a file) leaves nothing behind. The network is a tiny one with its
// deterministic initial weights (plumbing, not accuracy), except in the last
// case, which runs the shipped weights on four slices.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/image2d.h"
#include "data/prepare.h"
#include "data/pseudo_labels.h"
#include "kernels/ops.h"
#include "model/covidrate_net.h"
#include "model/load_weights.h"
#include "nn/autograd.h"
#include "nn/safetensors.h"
#include "tests/support/run_covidrate.h"
#include "tests/support/test_support.h"
#include "tests/temp_files.h"

using namespace covidrate;
namespace fs = std::filesystem;

namespace {

// `count` unlabelled slices, every 40th from the start (different patients' volumes).
std::vector<std::string> unlabelled(int count) {
  std::vector<std::string> all = data::pictures_in(test::data_dir() + "/medseg-semiseg/unlabeled");
  REQUIRE(all.size() >= static_cast<size_t>(40 * count));
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) out.push_back(all[static_cast<size_t>(40 * i)]);
  return out;
}

// A 512 x 512 picture of uniform noise: no chest, and segment's lung check
// finds no lung in it ("lung" over 90 % of the picture).
std::string noise_picture(const std::string& path) {
  std::mt19937 rng(11);
  std::vector<uint8_t> pixels(512 * 512);
  for (uint8_t& p : pixels) p = static_cast<uint8_t>(rng());
  data::write_png_gray(path, pixels.data(), 512, 512);
  return path;
}

// The fields of one line of certainty.csv.
std::vector<std::string> fields(const std::string& line) {
  std::vector<std::string> out(1);
  for (char c : line) {
    if (c == ',') out.emplace_back();
    else out.back().push_back(c);
  }
  return out;
}

CovidRateNet tiny_net() { return CovidRateNet(NetConfig{.width = 0.0625, .cpb = true, .seed = 5}); }

// The index of one picture's prediction, computed here from the pieces.
double index_of(const SegmentationNet& net, const std::string& path, int64_t size, double cutoff) {
  const data::PreparedSlice s = data::prepare_slice(data::read_image(path), nullptr, nullptr, size);
  ag::NoGrad no_grad;
  const Tensor out = net.forward(ag::Var(Tensor::from_vector({1, 1, size, size}, s.image))).value();
  Tensor ci = Tensor::empty({1});
  ops::certainty_index(out, cutoff, ci);
  return ci.to_vector()[0];
}

}  // namespace

TEST_CASE("pseudo-labels: each slice's certainty index, the most certain kept, a training set written") {
  const std::vector<std::string> pictures = unlabelled(6);
  CovidRateNet net = tiny_net();
  net.set_training(false);
  test::TempDir dir;
  data::PseudoLabelOptions o;
  o.size = 64;
  o.batch = 4;  // a full batch and a partial one
  o.min_certainty = 0;
  o.top = 3;
  int64_t last_progress = -1;
  o.progress = [&](int64_t done, int64_t total) {
    CHECK(total == 6);
    last_progress = done;
  };
  const std::string out = dir.file("pseudo");
  const std::vector<data::ScoredSlice> slices = data::make_pseudo_labels(pictures, net, o, out);
  REQUIRE(slices.size() == 6);
  CHECK(last_progress == 6);

  // The index is the op's on the network's output, slice by slice, whatever the batching.
  std::vector<double> certainties;
  for (size_t i = 0; i < slices.size(); ++i) {
    CAPTURE(slices[i].path);
    CHECK(slices[i].path == pictures[i]);
    CHECK(slices[i].name == fs::path(pictures[i]).stem().string());
    CHECK(slices[i].certainty == doctest::Approx(index_of(net, pictures[i], 64, o.cutoff)).epsilon(1e-6));
    CHECK(slices[i].certainty > o.cutoff);  // an untrained sigmoid hovers near 0.5: some pixels above 0.3
    certainties.push_back(slices[i].certainty);
  }
  // Kept: the three highest indices.
  std::vector<double> sorted = certainties;
  std::sort(sorted.rbegin(), sorted.rend());
  int kept = 0;
  for (const data::ScoredSlice& s : slices) {
    kept += s.kept;
    CHECK(s.kept == (s.certainty >= sorted[2]));
  }
  CHECK(kept == 3);

  // The folder: the kept pictures as they were, their masks at the picture's size, every index in the CSV.
  REQUIRE(fs::is_directory(out));
  CHECK_FALSE(fs::exists(out + ".tmp"));
  CHECK(fs::is_regular_file(out + "/overview.png"));
  const data::Dataset set = data::load_dataset(out + "/images", out + "/masks");
  REQUIRE(set.size() == 3);
  for (const data::Sample& sample : set.samples) {
    const auto it = std::find_if(slices.begin(), slices.end(), [&](const auto& s) { return s.name == sample.name; });
    REQUIRE(it != slices.end());
    CHECK(it->kept);
    CHECK(test::read_bytes(sample.image_path) == test::read_bytes(it->path));
    CHECK(sample.mask.nx == sample.image.nx);
    CHECK(sample.mask.ny == sample.image.ny);
    double lesion = 0;
    for (float v : sample.mask.voxels) lesion += v;
    CHECK(100.0 * lesion / static_cast<double>(sample.mask.voxels.size()) ==
          doctest::Approx(it->lesion_percent).epsilon(1e-9));
  }
  std::ifstream csv(out + "/certainty.csv");
  std::string line;
  REQUIRE(std::getline(csv, line));
  CHECK(line == "name,certainty_index,lesion_percent,kept,note");
  int rows = 0;
  while (std::getline(csv, line)) {
    const std::vector<std::string> f = fields(line);
    REQUIRE(f.size() == 5);
    CHECK(f[0] == slices[rows].name);
    CHECK(f[3] == (slices[rows].kept ? "1" : "0"));
    CHECK(f[4].empty());  // every one a chest
    ++rows;
  }
  CHECK(rows == 6);

  // A least certainty above every index keeps nothing (and writes no folder when asked for none).
  o.top = 0;
  o.min_certainty = sorted[0] + 1e-6;
  for (const data::ScoredSlice& s : data::make_pseudo_labels(pictures, net, o, "")) CHECK_FALSE(s.kept);
}

TEST_CASE("pseudo-labels: a picture that is not a chest is never kept, however sure the network is") {
  CovidRateNet net = tiny_net();
  net.set_training(false);
  test::TempDir dir;
  std::vector<std::string> pictures = unlabelled(3);
  pictures.insert(pictures.begin() + 1, noise_picture(dir.file("noise.png")));
  data::PseudoLabelOptions o;
  o.size = 64;
  o.min_certainty = 0;  // every scored slice would be kept, the noise too
  const std::string out = dir.file("pseudo");
  const std::vector<data::ScoredSlice> slices = data::make_pseudo_labels(pictures, net, o, out);
  REQUIRE(slices.size() == 4);
  for (const data::ScoredSlice& s : slices) {
    CAPTURE(s.path);
    const bool noise = s.name == "noise";
    CHECK(s.certainty > o.cutoff);  // scored like the others: the index alone would keep it
    CHECK(s.lung == !noise);
    CHECK(s.kept == !noise);
  }
  CHECK(data::load_dataset(out + "/images", out + "/masks").size() == 3);
  CHECK_FALSE(fs::exists(out + "/images/noise.png"));
  std::ifstream csv(out + "/certainty.csv");
  std::string line;
  REQUIRE(std::getline(csv, line));
  int rows = 0;
  while (std::getline(csv, line)) {
    const std::vector<std::string> f = fields(line);
    REQUIRE(f.size() == 5);
    const bool noise = f[0] == "noise";
    CHECK(f[3] == (noise ? "0" : "1"));
    CHECK(f[4] == (noise ? data::kNoLungNote : ""));
    ++rows;
  }
  CHECK(rows == 4);
}

TEST_CASE("pseudo-labels: bad input is refused by name and leaves no folder") {
  CovidRateNet net = tiny_net();
  net.set_training(false);
  test::TempDir dir;
  data::PseudoLabelOptions o;
  o.size = 64;
  const std::string out = dir.file("pseudo");
  // A mask among the pictures: named, and neither the folder nor its temporary is left.
  std::vector<std::string> pictures = unlabelled(2);
  pictures.push_back(test::data_dir() + "/medseg-semiseg/train/masks/3.png");
  CHECK_THROWS_WITH_AS(data::make_pseudo_labels(pictures, net, o, out), doctest::Contains("3.png"), Error);
  CHECK_FALSE(fs::exists(out));
  CHECK_FALSE(fs::exists(out + ".tmp"));
  // A picture that does not decode.
  const std::string broken = dir.file("broken.jpg");
  test::write_bytes(broken, test::garbage(500, 3));
  CHECK_THROWS_WITH_AS(data::make_pseudo_labels({broken}, net, o, out), doctest::Contains("broken.jpg"), Error);
  CHECK_FALSE(fs::exists(out));
  // An existing output, a folder without pictures, options out of range.
  fs::create_directories(out);
  CHECK_THROWS_WITH_AS(data::make_pseudo_labels(unlabelled(1), net, o, out), doctest::Contains("already exists"),
                       Error);
  fs::create_directories(dir.file("empty"));
  CHECK_THROWS_WITH_AS(data::pictures_in(dir.file("empty")), doctest::Contains("no PNG or JPG"), Error);
  o.cutoff = 1.0;
  CHECK_THROWS_AS(data::make_pseudo_labels(unlabelled(1), net, o, ""), Error);
  o.cutoff = 0.3;
  // Two pictures of one stem would both be masks/0.png: both named, before any work.
  const fs::path twins = dir.file("twins");
  fs::create_directories(twins);
  fs::copy_file(unlabelled(1)[0], twins / "0.jpg");
  noise_picture((twins / "0.png").string());
  const std::vector<std::string> both = {(twins / "0.jpg").string(), (twins / "0.png").string()};
  const std::string named = both[0] + " and " + both[1];
  CHECK_THROWS_WITH_AS(data::make_pseudo_labels(both, net, o, out + "2"), doctest::Contains(named.c_str()), Error);
  CHECK_FALSE(fs::exists(out + "2"));
  CHECK_THROWS_WITH_AS(data::pictures_in(twins.string()), doctest::Contains("share the name '0'"), Error);
}

// Every file of a folder, by name, with its bytes.
std::map<std::string, std::vector<char>> folder_bytes(const std::string& dir) {
  std::map<std::string, std::vector<char>> files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) files[fs::relative(e.path(), dir).string()] = test::read_bytes(e.path().string());
  return files;
}

// The journalled runs' options: the tiny net's 64 x 64 inputs, every slice a
// candidate (each has a pseudo-label in the journal).
data::PseudoLabelOptions journalled(int64_t batch) {
  data::PseudoLabelOptions o;
  o.size = 64;
  o.batch = batch;
  o.min_certainty = 0;
  o.network_identity = "tiny";
  return o;
}

TEST_CASE("pseudo-labels: an interrupted run resumes where it stopped and writes what an uninterrupted one writes") {
  const std::vector<std::string> pictures = unlabelled(6);
  CovidRateNet net = tiny_net();
  net.set_training(false);
  test::TempDir dir;
  data::PseudoLabelOptions o = journalled(2);
  o.top = 3;
  const std::string reference = dir.file("reference");
  const std::vector<data::ScoredSlice> whole = data::make_pseudo_labels(pictures, net, o, reference);
  CHECK_FALSE(fs::exists(reference + data::kPartialSuffix));  // removed once the folder is whole

  // Stopped after two batches (as a kill would stop it, after their lines were synced).
  const std::string out = dir.file("pseudo"), partial = out + data::kPartialSuffix;
  data::PseudoLabelOptions stopping = o;
  stopping.progress = [](int64_t done, int64_t) {
    if (done == 4) throw Error("stopped");
  };
  CHECK_THROWS_WITH_AS(data::make_pseudo_labels(pictures, net, stopping, out), "stopped", Error);
  CHECK_FALSE(fs::exists(out));
  REQUIRE(fs::is_directory(partial));
  CHECK(std::distance(fs::directory_iterator(partial + "/candidates"), fs::directory_iterator()) == 4);
  // The run was killed while writing a fifth line: torn, it is cut off and that slice scored again.
  { std::ofstream(partial + "/scores.txt", std::ios::app) << "0.61 12.5 1 " << fs::path(pictures[4]).stem().string(); }

  // Resumed, it scores the last two, and is stopped again before writing the folder.
  data::PseudoLabelOptions resuming = o;
  int64_t scored_before = -1, to_score = -1;
  resuming.resumed = [&](int64_t scored, int64_t all) {
    scored_before = scored;
    CHECK(all == 6);
  };
  resuming.progress = [&](int64_t done, int64_t total) {
    to_score = total;
    if (done == 2) throw Error("stopped again");
  };
  CHECK_THROWS_WITH_AS(data::make_pseudo_labels(pictures, net, resuming, out), "stopped again", Error);
  CHECK(scored_before == 4);
  CHECK(to_score == 2);
  // Resumed again, every slice is in the journal (the torn line did not garble the lines after it).
  resuming.progress = [&](int64_t, int64_t total) { to_score = total; };
  const std::vector<data::ScoredSlice> resumed = data::make_pseudo_labels(pictures, net, resuming, out);
  CHECK(scored_before == 6);
  CHECK(to_score == 0);
  REQUIRE(resumed.size() == whole.size());
  for (size_t i = 0; i < whole.size(); ++i) {
    CAPTURE(whole[i].name);
    CHECK(resumed[i].certainty == whole[i].certainty);  // the journal's 17 digits give the same doubles back
    CHECK(resumed[i].lesion_percent == whole[i].lesion_percent);
    CHECK(resumed[i].kept == whole[i].kept);
  }
  CHECK(folder_bytes(out) == folder_bytes(reference));
  CHECK_FALSE(fs::exists(partial));
}

TEST_CASE("pseudo-labels: a journal of other settings, damaged lines, lost pseudo-labels, a second run") {
  const std::vector<std::string> pictures = unlabelled(3);
  CovidRateNet net = tiny_net();
  net.set_training(false);
  test::TempDir dir;
  const data::PseudoLabelOptions o = journalled(1);
  const std::string out = dir.file("pseudo"), partial = out + data::kPartialSuffix;
  const auto stop_after = [&](int64_t n) {
    fs::remove_all(out);
    data::PseudoLabelOptions s = o;
    s.progress = [n](int64_t done, int64_t) {
      if (done == n) throw Error("stopped");
    };
    CHECK_THROWS_AS(data::make_pseudo_labels(pictures, net, s, out), Error);
    REQUIRE(fs::is_directory(partial));
  };
  // Resumes the journal; returns how many slices it scored.
  const auto resume = [&] {
    int64_t to_score = -1;
    data::PseudoLabelOptions resuming = o;
    resuming.progress = [&](int64_t, int64_t total) { to_score = total; };
    CHECK(data::make_pseudo_labels(pictures, net, resuming, out).size() == 3);
    CHECK(fs::is_regular_file(out + "/certainty.csv"));
    CHECK_FALSE(fs::exists(partial));
    return to_score;
  };
  const auto candidate = [&](size_t i) {
    return partial + "/candidates/" + fs::path(pictures[i]).stem().string() + ".png";
  };
  stop_after(2);

  // Other settings: refused, naming the one that differs; the journal is left as it was.
  data::PseudoLabelOptions other = o;
  other.threshold = 0.6;
  CHECK_THROWS_WITH_AS(data::make_pseudo_labels(pictures, net, other, out),
                       doctest::Contains("there 'threshold 0.5', now 'threshold 0.6'"), Error);
  other = o;
  other.network_identity = "another";
  CHECK_THROWS_WITH_AS(data::make_pseudo_labels(pictures, net, other, out),
                       doctest::Contains("there 'network tiny', now 'network another'"), Error);
  // A batch of one and a larger one round differently on the CPU (another convolution path).
  other = o;
  other.batch = 2;
  CHECK_THROWS_WITH_AS(data::make_pseudo_labels(pictures, net, other, out),
                       doctest::Contains("there 'batch 1', now 'batch 2'"), Error);
  CHECK(fs::is_directory(partial));
  CHECK_FALSE(fs::exists(out));

  // Pseudo-labels gone, or emptied (as a power cut can leave a file not yet
  // written out): their slices are scored again, with the third.
  fs::remove(candidate(0));
  fs::resize_file(candidate(1), 0);
  CHECK(resume() == 3);

  // A damaged line is where reading stops: it and the lines after it are scored again.
  stop_after(2);
  { std::ofstream(partial + "/scores.txt", std::ios::app) << "certain\n"; }
  CHECK(resume() == 1);
  stop_after(2);
  {  // the first line's bytes turned to zeros
    std::string text = test::read_text_file(partial + "/scores.txt");
    std::fill(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(text.find('\n')), '\0');
    std::ofstream(partial + "/scores.txt", std::ios::binary | std::ios::trunc) << text;
  }
  CHECK(resume() == 3);

  // A second run into the same --out while the first is writing its journal: refused.
  fs::remove_all(out);
  data::PseudoLabelOptions first = o;
  bool refused = false;
  first.progress = [&](int64_t done, int64_t) {
    if (done != 1) return;
    try {
      data::make_pseudo_labels(pictures, net, o, out);
    } catch (const Error& e) {
      const std::string what = e.what();
      refused = what.find("another run (process ") != std::string::npos &&
                what.find("is writing " + partial) != std::string::npos;
    }
  };
  CHECK(data::make_pseudo_labels(pictures, net, first, out).size() == 3);
  CHECK(refused);
  CHECK(fs::is_regular_file(out + "/certainty.csv"));  // the first was not disturbed
}

TEST_CASE("pseudo-labels: resumed with names of spaces, and with a picture replaced under its name") {
  CovidRateNet net = tiny_net();
  net.set_training(false);
  test::TempDir dir;
  const std::vector<std::string> sources = unlabelled(3);
  // A source slice as a PNG, mirrored on request (the same size, other pixels).
  const auto write_picture = [](const std::string& source, const std::string& path, bool mirrored) {
    const data::Volume v = data::read_image(source);
    std::vector<uint8_t> pixels(v.voxels.size());
    for (int64_t y = 0; y < v.ny; ++y)
      for (int64_t x = 0; x < v.nx; ++x)
        pixels[y * v.nx + x] = static_cast<uint8_t>(v.voxels[y * v.nx + (mirrored ? v.nx - 1 - x : x)]);
    data::write_png_gray(path, pixels.data(), v.nx, v.ny);
  };
  // " a" and "a" differ only by a space, "  " is spaces only: each its own slice.
  const fs::path images = dir.file("images");
  fs::create_directories(images);
  std::vector<std::string> pictures;
  for (const char* name : {" a.png", "  .png", "a.png"}) {
    pictures.push_back((images / name).string());
    write_picture(sources[pictures.size() - 1], pictures.back(), false);
  }
  const data::PseudoLabelOptions o = journalled(1);
  const std::string out = dir.file("pseudo"), partial = out + data::kPartialSuffix;
  data::PseudoLabelOptions stopping = o;
  stopping.progress = [](int64_t done, int64_t) {
    if (done == 2) throw Error("stopped");
  };
  CHECK_THROWS_AS(data::make_pseudo_labels(pictures, net, stopping, out), Error);
  // " a" is replaced by its mirror image under the same name: its score must not be reused.
  write_picture(sources[0], pictures[0], true);
  int64_t to_score = -1;
  data::PseudoLabelOptions resuming = o;
  resuming.progress = [&](int64_t, int64_t total) { to_score = total; };
  const std::vector<data::ScoredSlice> resumed = data::make_pseudo_labels(pictures, net, resuming, out);
  CHECK(to_score == 2);  // " a" again, and "a"
  const std::vector<data::ScoredSlice> whole = data::make_pseudo_labels(pictures, net, o, dir.file("whole"));
  REQUIRE(resumed.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    CAPTURE(pictures[i]);
    CHECK(resumed[i].name == whole[i].name);
    CHECK(resumed[i].certainty == whole[i].certainty);
    CHECK(resumed[i].lung == whole[i].lung);
    CHECK(resumed[i].lesion_percent == whole[i].lesion_percent);
  }
  CHECK(folder_bytes(out) == folder_bytes(dir.file("whole")));
}

// For the command: the tiny net's weights as train writes them, and a folder of
// three unlabelled slices, in `dir`.
struct CommandInputs {
  std::string weights;
  fs::path images;
};
CommandInputs command_inputs(const test::TempDir& dir) {
  const CommandInputs in{dir.file("w.safetensors"), dir.file("unlabelled")};
  tiny_net().parameters().save(in.weights, {{"width", "0.0625"}, {"cpb", "1"}, {"size", "64"}});
  fs::create_directories(in.images);
  for (const std::string& p : unlabelled(3)) fs::copy_file(p, in.images / fs::path(p).filename());
  return in;
}

TEST_CASE("covidrate pseudo-label: the command's folder, its summary, and its usage errors") {
  test::TempDir dir;
  const auto [weights, images] = command_inputs(dir);
  noise_picture((images / "noise.png").string());
  const std::string common = "pseudo-label --weights " + weights + " --images " + images.string();
  const test::ProgramRun run = test::run_covidrate(dir, common + " --out " + dir.file("pl") + " --min-certainty 0 --top 2");
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.out.find("kept 2 of 4 slices") != std::string::npos);
  CHECK(run.out.find("1 passed over as not a chest") != std::string::npos);
  CHECK(run.err.find("1 picture passed over as not a chest (no lung found): noise.png") != std::string::npos);
  CHECK(run.err.find("4/4 slices") != std::string::npos);  // progress
  CHECK(data::load_dataset(dir.file("pl/images"), dir.file("pl/masks")).size() == 2);

  test::ProgramRun bad = test::run_covidrate(dir, common + " --out " + dir.file("pl"));
  CHECK(bad.exit_code != 0);
  CHECK(bad.err.find("already exists") != std::string::npos);
  bad = test::run_covidrate(dir, common + " --out " + dir.file("pl2") + " --sure");
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("unknown option '--sure'") != std::string::npos);
  bad = test::run_covidrate(dir, common + " --out " + dir.file("pl3") + " --min-certainty 2");
  CHECK(bad.exit_code != 0);
  CHECK(bad.err.find("--min-certainty") != std::string::npos);
  CHECK_FALSE(fs::exists(dir.file("pl2")));
  CHECK_FALSE(fs::exists(dir.file("pl3")));

  // Refused before the weights are read or a slice scored ("N slices from ..." not yet said), nothing written:
  // an --out under a file,
  bad = test::run_covidrate(dir, common + " --out " + dir.file("w.safetensors/pl"));
  CHECK(bad.exit_code == 1);
  CHECK(bad.err.find(dir.file("w.safetensors") + " is a file, not a folder") != std::string::npos);
  CHECK(bad.err.find("slices from") == std::string::npos);
  // two pictures of one name (both named).
  const fs::path twin = images / fs::path(unlabelled(1)[0]).filename();  // a .jpg
  fs::copy_file(images / "noise.png", fs::path(twin).replace_extension(".png"));
  bad = test::run_covidrate(dir, common + " --out " + dir.file("pl4"));
  CHECK(bad.exit_code == 1);
  CHECK(bad.err.find(twin.string() + " and " + fs::path(twin).replace_extension(".png").string() +
                     " share the name") != std::string::npos);
  CHECK(bad.err.find("slices from") == std::string::npos);
  CHECK_FALSE(fs::exists(dir.file("pl4")));
  CHECK_FALSE(fs::exists(dir.file("pl4.tmp")));
}

TEST_CASE("covidrate pseudo-label: a run stopped by a bad picture resumes once it is fixed, and ends as a whole run") {
  test::TempDir dir;
  const auto [weights, images] = command_inputs(dir);
  const std::string common = "pseudo-label --weights " + weights + " --images " + images.string() +
                             " --batch 1 --min-certainty 0 --top 2 --out ";
  test::ProgramRun run = test::run_covidrate(dir, common + dir.file("reference"));
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);

  // A mask among the pictures, last by name: three slices are scored before it stops the run.
  const fs::path mask = images / "zz_mask.png";
  fs::copy_file(test::data_dir() + "/medseg-semiseg/train/masks/3.png", mask);
  const std::string out = dir.file("pl"), partial = out + data::kPartialSuffix;
  run = test::run_covidrate(dir, common + out);
  CHECK(run.exit_code == 1);
  CHECK(run.err.find("zz_mask.png is not a grey picture") != std::string::npos);
  CHECK(run.err.find("the slices scored so far are kept in " + partial + "; the same command resumes there") !=
        std::string::npos);
  CHECK_FALSE(fs::exists(out));
  CHECK(fs::is_directory(partial));

  fs::remove(mask);
  run = test::run_covidrate(dir, common + out);
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.err.find("resuming the run in " + partial + ": 3 of 3 slices scored there") != std::string::npos);
  CHECK(folder_bytes(out) == folder_bytes(dir.file("reference")));
  CHECK_FALSE(fs::exists(partial));

  // Resuming with other settings is refused, naming the setting; the journal stays.
  fs::copy_file(test::data_dir() + "/medseg-semiseg/train/masks/3.png", mask);
  run = test::run_covidrate(dir, common + dir.file("pl2"));
  CHECK(run.exit_code == 1);
  fs::remove(mask);
  run = test::run_covidrate(dir, common + dir.file("pl2") + " --threshold 0.4");
  CHECK(run.exit_code == 1);
  CHECK(run.err.find("there 'threshold 0.5', now 'threshold 0.4'") != std::string::npos);
  CHECK(fs::is_directory(dir.file("pl2") + data::kPartialSuffix));
  CHECK_FALSE(fs::exists(dir.file("pl2")));
}

TEST_CASE("pseudo-labels with the shipped weights on real unlabelled slices") {
  const std::string weights = test::source_dir() + "/weights/covidrate-w1-s512.safetensors";
  REQUIRE(fs::is_regular_file(weights));
  const ModelSpec spec = resolve_model_spec(weights, safetensors::load_metadata(weights), {});
  const std::unique_ptr<SegmentationNet> net = load_for_inference(weights, spec, Device::CPU, DType::F32);
  data::PseudoLabelOptions o;
  o.size = spec.size;
  o.min_certainty = 0;
  const std::vector<data::ScoredSlice> slices = data::make_pseudo_labels(unlabelled(4), *net, o, "");
  for (const data::ScoredSlice& s : slices) {
    CAPTURE(s.name);
    // The index is 0 (nothing above the cut-off) or a mean of probabilities above it.
    CHECK((s.certainty == 0 || (s.certainty > o.cutoff && s.certainty <= 1)));
    CHECK(s.kept == (s.certainty > 0));
    CHECK(s.lesion_percent >= 0);
    CHECK(s.lesion_percent < 50);  // a trained network does not call half a slice lesion
  }
}
