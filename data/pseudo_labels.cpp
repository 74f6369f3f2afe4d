#include "data/pseudo_labels.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "data/image2d.h"
#include "data/input_domain.h"
#include "data/lungs.h"
#include "data/overlay.h"
#include "data/prepare.h"
#include "data/read_any.h"
#include "kernels/ops.h"
#include "nn/autograd.h"
#include "nn/error.h"
#include "nn/text_file.h"

namespace covidrate::data {

namespace fs = std::filesystem;

std::vector<std::string> pictures_in(const std::string& dir) {
  CR_CHECK(fs::is_directory(dir), "pseudo-label: " << dir << " is not a folder");
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::string ext = entry.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    if (entry.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg"))
      out.push_back(entry.path().string());
  }
  std::sort(out.begin(), out.end());
  CR_CHECK(!out.empty(), "pseudo-label: " << dir << " holds no PNG or JPG picture");
  check_distinct_stems(out, "pseudo-label");
  return out;
}

namespace {

// The journal of a run with an output folder, OUT.partial/:
//   settings.txt   what the scores depend on (the network, size, cutoff,
//                  threshold, least certainty); a resumed run must match it
//   scores.txt     a line per scored slice, "certainty lesion% lung name"
//                  (numbers to 17 digits: read back, they are the same
//                  doubles), appended and synced after each batch; a torn last
//                  line (the run killed while writing it) is cut off and its
//                  slice scored again
//   candidates/    <stem>.png: the pseudo-label (0/255) of each slice that may
//                  be kept, each written whole before its slice's line
//   lock           held (flock) by the run writing the journal
// Without an output folder nothing is journalled and nothing is kept on disk.
class Journal {
 public:
  Journal(const std::string& out_dir, const std::string& settings)
      : dir_(out_dir + kPartialSuffix), scores_path_((dir_ / "scores.txt").string()) {
    // One run at a time: a second run into the same --out would cut the
    // first's line in progress as torn, or find its journal gone at the end.
    fs::create_directories(dir_);
    const std::string lock_path = (dir_ / "lock").string();
    lock_.fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    CR_CHECK(lock_.fd >= 0, "pseudo-label: cannot write " << lock_path << ": " << std::strerror(errno));
    CR_CHECK(::flock(lock_.fd, LOCK_EX | LOCK_NB) == 0,
             "pseudo-label: another run is writing " << dir_.string() << " (the same --out); wait for it to end");
    const fs::path settings_path = dir_ / "settings.txt";
    if (fs::is_regular_file(settings_path)) {
      const std::string before = read_text(settings_path.string());
      CR_CHECK(before == settings, "pseudo-label: " << dir_.string()
                                                    << " holds an interrupted run with other settings ("
                                                    << first_difference(before, settings)
                                                    << "); rerun it with its settings, or remove the folder "
                                                       "to start over");
      load();
    } else {
      // New, or one killed before its settings were written: nothing to resume.
      fs::remove_all(dir_ / "scores.txt");
      fs::remove_all(dir_ / "candidates");
      fs::create_directories(dir_ / "candidates");
      write_text_atomically(settings_path.string(), settings);
    }
    file_ = std::fopen(scores_path_.c_str(), "ab");
    CR_CHECK(file_, "pseudo-label: cannot write " << scores_path_ << ": " << std::strerror(errno));
  }
  ~Journal() {
    if (file_) std::fclose(file_);
  }
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // The journalled score of a slice, or nullptr.
  const ScoredSlice* scored(const std::string& name) const {
    const auto it = scored_.find(name);
    return it == scored_.end() ? nullptr : &it->second;
  }
  std::string candidate_path(const std::string& name) const { return (dir_ / "candidates" / (name + ".png")).string(); }

  void add(const ScoredSlice& s) {
    CR_CHECK(s.name.find('\n') == std::string::npos, "pseudo-label: " << s.path << ": a line break in the name");
    char numbers[96];
    std::snprintf(numbers, sizeof numbers, "%.17g %.17g %d ", s.certainty, s.lesion_percent, s.lung ? 1 : 0);
    pending_ += numbers + s.name + "\n";
  }
  // The batch's lines on disk, synced: after this an interruption loses nothing of it.
  void commit() {
    const bool ok = std::fwrite(pending_.data(), 1, pending_.size(), file_) == pending_.size() &&
                    std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
    CR_CHECK(ok, "pseudo-label: cannot write " << scores_path_ << ": " << std::strerror(errno));
    pending_.clear();
  }
  const fs::path& dir() const { return dir_; }

 private:
  static std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  // The first line of `a` that `b` lacks, and b's line in its place.
  static std::string first_difference(const std::string& a, const std::string& b) {
    std::istringstream sa(a), sb(b);
    std::string la, lb;
    while (true) {
      const bool ga = static_cast<bool>(std::getline(sa, la)), gb = static_cast<bool>(std::getline(sb, lb));
      if (!ga && !gb) return "?";
      if (la != lb || ga != gb) return "there '" + (ga ? la : "") + "', now '" + (gb ? lb : "") + "'";
    }
  }
  void load() {
    std::string text = read_text(scores_path_);
    const size_t whole = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
    if (whole < text.size()) fs::resize_file(scores_path_, whole);  // a torn last line: scored again
    std::istringstream in(text.substr(0, whole));
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
      ScoredSlice s;
      int lung = 0, name_at = 0;
      const bool parsed = std::sscanf(line.c_str(), "%lf %lf %d %n", &s.certainty, &s.lesion_percent, &lung,
                                      &name_at) == 3 &&
                          name_at > 0 && static_cast<size_t>(name_at) < line.size() && (lung == 0 || lung == 1);
      CR_CHECK(parsed, "pseudo-label: " << scores_path_ << " line " << number
                                        << " is damaged; remove " << dir_.string() << " to start over");
      s.lung = lung == 1;
      s.name = line.substr(static_cast<size_t>(name_at));
      scored_[s.name] = s;
    }
  }

  // Closing the descriptor releases the lock, also when the constructor throws.
  struct LockFile {
    int fd = -1;
    ~LockFile() {
      if (fd >= 0) ::close(fd);
    }
  };
  fs::path dir_;
  std::string scores_path_;
  LockFile lock_;
  std::map<std::string, ScoredSlice> scored_;
  std::string pending_;
  FILE* file_ = nullptr;
};

bool may_be_kept(const ScoredSlice& s, const PseudoLabelOptions& o) {
  return s.lung && s.certainty > 0 && s.certainty >= o.min_certainty;
}

// The kept slices (the most certain first) from the journal's candidates into
// out_dir, through out_dir.tmp and a rename.
void write_folder(const std::string& out_dir, const std::vector<ScoredSlice>& slices,
                  const std::vector<size_t>& kept, const Journal& journal) {
  const fs::path tmp = out_dir + ".tmp";
  fs::remove_all(tmp);  // left by an interrupted run
  try {
    fs::create_directories(tmp / "images");
    fs::create_directories(tmp / "masks");
    std::vector<RgbImage> previews;
    for (const size_t i : kept) {
      const ScoredSlice& s = slices[i];
      const fs::path picture(s.path);
      fs::copy_file(picture, tmp / "images" / (s.name + picture.extension().string()));
      fs::copy_file(journal.candidate_path(s.name), tmp / "masks" / (s.name + ".png"));
      if (previews.size() < 12) {  // a look at what training will be told, lesions outlined
        // In the radiological display, as segment draws its montage.
        const Volume image = read_image(s.path);
        Volume mask = read_image(journal.candidate_path(s.name));
        CR_CHECK(mask.nx == image.nx && mask.ny == image.ny,
                 "pseudo-label: " << journal.candidate_path(s.name) << " is not the size of " << s.path);
        for (float& v : mask.voxels) v = v != 0.f ? 1.f : 0.f;
        static_cast<VolumeGrid&>(mask) = image;  // the picture's orientation
        previews.push_back(grey_slice(medseg_picture_displayed(image), 0));
        draw_outline(previews.back(), medseg_picture_displayed(std::move(mask)), 0, 1.f, kLesionColour);
      }
    }
    if (!previews.empty()) {
      const RgbImage m = montage(previews, 4);
      write_png_rgb((tmp / "overview.png").string(), m.rgb.data(), m.width, m.height);
    }
    // The note column came last, so that readers of the first four still read them.
    std::string csv = "name,certainty_index,lesion_percent,kept,note\n";
    for (const ScoredSlice& s : slices) {
      char numbers[64];
      std::snprintf(numbers, sizeof numbers, ",%.6f,%.4f,%d,", s.certainty, s.lesion_percent, s.kept ? 1 : 0);
      csv += csv_field(s.name) + numbers + (s.lung ? "" : kNoLungNote) + "\n";
    }
    write_text_atomically((tmp / "certainty.csv").string(), csv);  // checked to the close, with the reason
    fs::rename(tmp, out_dir);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

// The shortest text that reads back as v (0.6, not 0.59999999999999998).
std::string shortest(double v) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, ec == std::errc() ? end : buf);
}

std::string settings_text(const PseudoLabelOptions& o) {
  return "network " + o.network_identity + "\nsize " + std::to_string(o.size) + "\ncutoff " + shortest(o.cutoff) +
         "\nthreshold " + shortest(o.threshold) + "\nleast certainty " + shortest(o.min_certainty) + "\n";
}

}  // namespace

std::vector<ScoredSlice> make_pseudo_labels(const std::vector<std::string>& pictures, const SegmentationNet& net,
                                            const PseudoLabelOptions& o, const std::string& out_dir) {
  CR_CHECK(o.cutoff >= 0 && o.cutoff < 1, "pseudo-label: cutoff must be in [0, 1), got " << o.cutoff);
  CR_CHECK(o.threshold >= 0 && o.threshold < 1, "pseudo-label: threshold must be in [0, 1), got " << o.threshold);
  CR_CHECK(o.min_certainty >= 0 && o.min_certainty <= 1,
           "pseudo-label: the least certainty must be in [0, 1], got " << o.min_certainty);
  CR_CHECK(o.batch >= 1 && o.top >= 0, "pseudo-label: batch " << o.batch << ", top " << o.top);
  CR_CHECK(out_dir.empty() || !fs::exists(out_dir), "pseudo-label: " << out_dir << " already exists");
  check_distinct_stems(pictures, "pseudo-label");
  std::optional<Journal> journal;
  if (!out_dir.empty()) journal.emplace(out_dir, settings_text(o));

  const ClassicalLungExtractor lungs;
  const int64_t size = o.size;
  std::vector<ScoredSlice> slices(pictures.size());
  std::vector<size_t> todo;  // into slices: not in the journal
  for (size_t i = 0; i < pictures.size(); ++i) {
    ScoredSlice& s = slices[i];
    s.path = pictures[i];
    s.name = fs::path(s.path).stem().string();
    const ScoredSlice* before = journal ? journal->scored(s.name) : nullptr;
    // A candidate whose pseudo-label is gone is scored again.
    if (before && (!may_be_kept(*before, o) || fs::is_regular_file(journal->candidate_path(s.name)))) {
      s.certainty = before->certainty;
      s.lesion_percent = before->lesion_percent;
      s.lung = before->lung;
    } else {
      todo.push_back(i);
    }
  }
  const int64_t total = static_cast<int64_t>(todo.size());
  if (journal && todo.size() < pictures.size() && o.resumed)
    o.resumed(static_cast<int64_t>(pictures.size() - todo.size()), static_cast<int64_t>(pictures.size()));
  if (o.progress) o.progress(0, total);
  for (int64_t first = 0; first < total; first += o.batch) {
    const int64_t count = std::min(o.batch, total - first);
    std::vector<Volume> images(count);
    std::vector<PreparedSlice> prepared(count);
    std::vector<float> batch;
    batch.reserve(static_cast<size_t>(count * size * size));
    for (int64_t k = 0; k < count; ++k) {
      ScoredSlice& s = slices[todo[first + k]];
      images[k] = read_image(s.path);
      CR_CHECK(images[k].intensity == Intensity::Picture8Bit,
               "pseudo-label: " << s.path << " is not a grey picture (a binary PNG reads as a mask)");
      // In the MedSeg layout, as segment reads a picture (the lungs' sides follow from it).
      set_medseg_picture_orientation(images[k]);
      prepared[k] = prepare_slice(images[k], nullptr, nullptr, size);
      batch.insert(batch.end(), prepared[k].image.begin(), prepared[k].image.end());
      // segment's check: no lung found (none, or "lung" over 90 % of the picture, as in noise) is not a chest.
      s.lung = lungs.extract(images[k]).slice_has_lung[0] != 0;
    }
    std::vector<float> probabilities, certainty;
    {
      ag::NoGrad no_grad;
      const Tensor input = Tensor::from_vector({count, 1, size, size}, batch).to(o.device);
      const Tensor output = net.forward(ag::Var(input)).value();
      Tensor ci = Tensor::empty({count}, output.dtype(), output.device());
      ops::certainty_index(output, o.cutoff, ci);  // on the device, where the batch is
      certainty = ci.to_vector();
      probabilities = output.to_vector();
    }
    for (int64_t k = 0; k < count; ++k) {
      ScoredSlice& s = slices[todo[first + k]];
      s.certainty = certainty[k];
      const std::vector<float> p = to_original_grid(probabilities.data() + k * size * size, prepared[k].placement);
      std::vector<uint8_t> mask(p.size());
      int64_t lesion = 0;
      for (size_t i = 0; i < p.size(); ++i) lesion += (mask[i] = p[i] > o.threshold ? 255 : 0) != 0;
      s.lesion_percent = 100.0 * static_cast<double>(lesion) / static_cast<double>(p.size());
      if (journal) {
        if (may_be_kept(s, o)) write_png_gray(journal->candidate_path(s.name), mask.data(), images[k].nx, images[k].ny);
        journal->add(s);
      }
    }
    if (journal) journal->commit();
    if (o.progress) o.progress(first + count, total);
  }

  // The most certain first; equal indices in the pictures' order, so the choice is reproducible.
  std::vector<size_t> kept;
  for (size_t i = 0; i < slices.size(); ++i)
    if (may_be_kept(slices[i], o)) kept.push_back(i);
  std::stable_sort(kept.begin(), kept.end(),
                   [&](size_t a, size_t b) { return slices[a].certainty > slices[b].certainty; });
  if (o.top > 0 && static_cast<int64_t>(kept.size()) > o.top) kept.resize(static_cast<size_t>(o.top));
  for (const size_t i : kept) slices[i].kept = true;
  if (journal) {
    write_folder(out_dir, slices, kept, *journal);
    const fs::path dir = journal->dir();
    journal.reset();  // closes scores.txt
    std::error_code ec;
    fs::remove_all(dir, ec);  // the folder is whole; a journal left behind would only be refused next time
  }
  return slices;
}

}  // namespace covidrate::data
