#include "data/pseudo_labels.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
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
#include "data/report.h"
#include "kernels/ops.h"
#include "nn/autograd.h"
#include "nn/error.h"
#include "nn/file_lock.h"
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
//                  threshold, least certainty, batch); a resumed run must match it
//   scores.txt     a line per scored slice: "certainty lesion% lung picture-hash
//                  name" (numbers to 17 digits: read back, they are the same
//                  doubles; the hash is the picture file's FNV-1a, so a picture
//                  replaced under the same name is scored again; the name is the
//                  rest of the line, spaces and all), appended and synced after
//                  each batch. Reading stops at the first line that does not
//                  parse (one torn by a kill, or garbage after a power cut): it
//                  and every line after it are cut off and their slices scored
//                  again
//   candidates/    <stem>.png: the pseudo-label (0/255) of each slice that may
//                  be kept, written before its slice's line; one that does not
//                  read back whole is scored again
//   lock           a FileLock held by the run writing the journal
// Without an output folder nothing is journalled and nothing is kept on disk.
class Journal {
 public:
  // A journalled slice: its score, and the hash of the picture it was made from.
  struct Entry {
    ScoredSlice score;
    std::string picture_hash;
  };

  Journal(const std::string& out_dir, const std::string& settings)
      : dir_(out_dir + kPartialSuffix), scores_path_((dir_ / "scores.txt").string()) {
    // One run at a time: a second run into the same --out would cut the
    // first's line in progress as torn, or find its journal gone at the end.
    fs::create_directories(dir_);
    const FileLock::Outcome locked = lock_.acquire((dir_ / "lock").string());
    CR_CHECK(locked != FileLock::Outcome::HeldByOther,
             "pseudo-label: another run" << (lock_.holder().empty() ? "" : " (process " + lock_.holder() + ")")
                                         << " is writing " << dir_.string() << " (the same --out); wait for it to end");
    CR_CHECK(locked == FileLock::Outcome::Held, "pseudo-label: " << lock_.why());
    const fs::path settings_path = dir_ / "settings.txt";
    if (fs::is_regular_file(settings_path)) {
      const std::string before = read_text(settings_path.string());
      if (before != settings)
        throw JournalOfOtherSettings("pseudo-label: " + dir_.string() + " holds an interrupted run with other settings (" +
                                     first_difference(before, settings) +
                                     "); rerun it with its settings, or remove the folder to start over");
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

  // The journalled entry of a slice, or nullptr.
  const Entry* entry(const std::string& name) const {
    const auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
  }
  std::string candidate_path(const std::string& name) const { return (dir_ / "candidates" / (name + ".png")).string(); }

  void add(const ScoredSlice& s, const std::string& picture_hash) {
    CR_CHECK(s.name.find('\n') == std::string::npos, "pseudo-label: " << s.path << ": a line break in the name");
    char numbers[96];
    std::snprintf(numbers, sizeof numbers, "%.17g %.17g %d ", s.certainty, s.lesion_percent, s.lung ? 1 : 0);
    pending_ += numbers + picture_hash + " " + s.name + "\n";
  }
  // The batch's lines on disk, synced: after this an interruption loses nothing of it.
  void commit() {
    const bool ok = std::fwrite(pending_.data(), 1, pending_.size(), file_) == pending_.size() &&
                    std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
    CR_CHECK(ok, "pseudo-label: cannot write " << scores_path_ << ": " << std::strerror(errno));
    pending_.clear();
  }
  // The run is over and its folder written: the journal goes, the lock last
  // (held until then, so that no other run starts on a journal being removed).
  void remove() {
    if (file_) std::fclose(file_), file_ = nullptr;
    std::error_code ec;
    fs::remove(dir_ / "scores.txt", ec);
    fs::remove(dir_ / "settings.txt", ec);
    fs::remove_all(dir_ / "candidates", ec);
    lock_.release();       // removes the lock file, then unlocks
    fs::remove(dir_, ec);  // only if empty: a run that came in meanwhile keeps its files
  }

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
  // One line of scores.txt (without its '\n'), or nothing when it does not parse.
  static std::optional<Entry> parse(const std::string& line) {
    // Four fields, each ended by one space, then the name: the rest of the line.
    std::string fields[4];
    size_t at = 0;
    for (std::string& f : fields) {
      const size_t space = line.find(' ', at);
      if (space == std::string::npos || space == at) return std::nullopt;
      f = line.substr(at, space - at);
      at = space + 1;
    }
    Entry e;
    const auto number = [](const std::string& text, double& value) {
      const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
      return error == std::errc() && end == text.data() + text.size() && std::isfinite(value);
    };
    if (!number(fields[0], e.score.certainty) || !number(fields[1], e.score.lesion_percent)) return std::nullopt;
    if (fields[2] != "0" && fields[2] != "1") return std::nullopt;
    if (fields[3].size() != 16 || fields[3].find_first_not_of("0123456789abcdef") != std::string::npos)
      return std::nullopt;
    if (at >= line.size()) return std::nullopt;
    e.score.lung = fields[2] == "1";
    e.picture_hash = fields[3];
    e.score.name = line.substr(at);
    return e;
  }
  void load() {
    const std::string text = read_text(scores_path_);
    size_t good = 0;  // bytes of whole, parsed lines
    while (good < text.size()) {
      const size_t end = text.find('\n', good);
      if (end == std::string::npos) break;  // torn
      const std::optional<Entry> e = parse(text.substr(good, end - good));
      if (!e) break;  // damaged: from here on, scored again
      entries_[e->score.name] = *e;
      good = end + 1;
    }
    if (good < text.size()) fs::resize_file(scores_path_, good);
  }

  fs::path dir_;
  std::string scores_path_;
  FileLock lock_;  // released by its destructor also when the constructor throws
  std::map<std::string, Entry> entries_;
  std::string pending_;
  FILE* file_ = nullptr;
};

// Whether a journalled pseudo-label reads back whole: a picture, at the size of
// the slice's picture.
bool reads_back(const std::string& candidate, const Volume& picture) {
  try {
    const Volume mask = read_image(candidate);
    return mask.nx == picture.nx && mask.ny == picture.ny && mask.nz == 1;
  } catch (const Error&) {
    return false;
  }
}

bool may_be_kept(const ScoredSlice& s, const PseudoLabelOptions& o) {
  return s.lung && s.certainty > 0 && s.certainty >= o.min_certainty;
}

// The kept slices (the most certain first) from the journal's candidates into
// out_dir, through out_dir.tmp and a rename.
void write_folder(const std::string& out_dir, const std::vector<ScoredSlice>& slices,
                  const std::vector<size_t>& kept, const Journal& journal) {
  const fs::path tmp = start_temp_folder(out_dir);  // an interrupted run's is replaced
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
    publish_folder(tmp.string(), out_dir);
  } catch (...) {
    remove_temp_folder(tmp.string());  // its mark last
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
         "\nthreshold " + shortest(o.threshold) + "\nleast certainty " + shortest(o.min_certainty) +
         // A batch of one takes another convolution path on the CPU than larger
         // ones: certainties differ in the sixth decimal, so a resume at another
         // batch would match no uninterrupted run.
         "\nbatch " + std::to_string(o.batch) + "\n";
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
  std::vector<std::string> hashes(pictures.size());  // of the picture files, with a journal
  for (size_t i = 0; i < pictures.size(); ++i) {
    ScoredSlice& s = slices[i];
    s.path = pictures[i];
    s.name = fs::path(s.path).stem().string();
    if (journal) hashes[i] = file_fnv1a64(s.path);
    const Journal::Entry* before = journal ? journal->entry(s.name) : nullptr;
    // Taken from the journal when made from this very picture, with its
    // pseudo-label, if it may be kept, there whole.
    if (before && before->picture_hash == hashes[i] &&
        (!may_be_kept(before->score, o) || reads_back(journal->candidate_path(s.name), read_image(s.path)))) {
      s.certainty = before->score.certainty;
      s.lesion_percent = before->score.lesion_percent;
      s.lung = before->score.lung;
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
        journal->add(s, hashes[todo[first + k]]);
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
    journal->remove();  // the folder is whole; a journal left behind would only be refused next time
  }
  return slices;
}

}  // namespace covidrate::data
