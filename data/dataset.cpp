#include "data/dataset.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <numeric>
#include <random>

#include "data/image2d.h"
#include "data/input_domain.h"
#include "data/lungs.h"
#include "nn/error.h"
#include "nn/json.h"

namespace covidrate::data {
namespace {

namespace fs = std::filesystem;

bool is_picture(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

// stem -> path of every picture in `dir`; two pictures with one stem are refused
// (which of them is the slice would be a guess).
std::map<std::string, std::string> pictures_by_stem(const std::string& dir, const char* what) {
  CR_CHECK(fs::is_directory(dir), "dataset: the " << what << " folder " << dir << " does not exist");
  std::map<std::string, std::string> found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file() || !is_picture(entry.path())) continue;
    const std::string stem = entry.path().stem().string();
    const auto [it, inserted] = found.emplace(stem, entry.path().string());
    CR_CHECK(inserted, "dataset: " << it->second << " and " << entry.path().string()
                                   << " have the same name; keep one picture per slice");
  }
  return found;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

// "2" before "10" when both are numbers; otherwise by name.
bool stem_less(const std::string& a, const std::string& b) {
  if (all_digits(a) && all_digits(b) && a.size() != b.size()) return a.size() < b.size();
  return a < b;
}

Volume read_slice(const std::string& path) {
  Volume v;
  try {
    v = read_image(path);
    v = to_input_domain(v);
  } catch (const Error& e) {
    throw Error("dataset: cannot use the image " + path + ": " + e.what());
  }
  return v;
}

// Lesion = 1, background = 0. Masks are binary PNGs (Label 0/1 after read_image);
// palette PNGs with several lesion classes count every class as lesion; a grey
// picture must hold only 0 and 255.
Volume read_mask(const std::string& path, const Volume& image) {
  Volume m;
  try {
    m = read_image(path);
  } catch (const Error& e) {
    throw Error("dataset: cannot read the mask " + path + ": " + e.what());
  }
  CR_CHECK(m.nx == image.nx && m.ny == image.ny,
           "dataset: the mask " << path << " is " << m.nx << " x " << m.ny << " but its image "
                                << image.source << " is " << image.nx << " x " << image.ny);
  for (float& v : m.voxels) {
    if (m.intensity == Intensity::Label) {
      v = v > 0 ? 1.f : 0.f;
    } else {
      CR_CHECK(v == 0.f || v == 255.f, "dataset: the mask " << path << " is not binary (it holds the value "
                                                            << v << "; expected 0 and 255)");
      v = v > 0 ? 1.f : 0.f;
    }
  }
  m.intensity = Intensity::Label;
  return m;
}

Volume lung_pixels(const Volume& image) {
  static const ClassicalLungExtractor extractor;
  // The pictures are in the MedSeg layout (the transpose of the radiological
  // display): said so, the extractor finds the midline, the airways and the
  // chest wall where they are, as it does for segment's pictures.
  Volume picture = image;
  set_medseg_picture_orientation(picture);
  const LungSegmentation seg = extractor.extract(picture);
  Volume lungs = to_float(seg.labels);
  for (float& v : lungs.voxels) v = v != 0.f ? 1.f : 0.f;  // either lung (kRightLung, kLeftLung)
  return lungs;
}

std::vector<int64_t> shuffled_indices(int64_t count, uint64_t seed) {
  std::vector<int64_t> order(static_cast<size_t>(count));
  std::iota(order.begin(), order.end(), 0);
  // Fisher-Yates with our own index draw: std::shuffle and the distributions are
  // implementation-defined, the engine's raw output is not.
  std::mt19937_64 rng(seed);
  for (int64_t i = count - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

}  // namespace

Dataset load_dataset(const std::string& images_dir, const std::string& masks_dir,
                     const DatasetOptions& options) {
  const auto images = pictures_by_stem(images_dir, "images");
  const auto masks = pictures_by_stem(masks_dir, "masks");
  for (const auto& [stem, path] : images)
    CR_CHECK(masks.count(stem), "dataset: the image " << path << " has no mask " << stem
                                                      << ".png in " << masks_dir);
  for (const auto& [stem, path] : masks)
    CR_CHECK(images.count(stem), "dataset: the mask " << path << " has no image " << stem
                                                      << ".jpg/.png in " << images_dir);
  CR_CHECK(!images.empty(), "dataset: no pictures (.png, .jpg) in " << images_dir);

  std::vector<std::string> stems;
  for (const auto& [stem, path] : images) stems.push_back(stem);
  std::sort(stems.begin(), stems.end(), stem_less);

  Dataset set;
  for (const std::string& stem : stems) {
    Sample s;
    s.name = stem;
    s.image_path = images.at(stem);
    s.mask_path = masks.at(stem);
    s.image = read_slice(s.image_path);
    CR_CHECK(s.image.nz == 1, "dataset: " << s.image_path << " has " << s.image.nz << " slices; expected one");
    s.mask = read_mask(s.mask_path, s.image);
    if (options.lungs) s.lungs = lung_pixels(s.image);
    set.samples.push_back(std::move(s));
  }
  return set;
}

Split train_validation_split(int64_t count, double validation_fraction, uint64_t seed) {
  CR_CHECK(count >= 1, "train_validation_split: no samples");
  CR_CHECK(validation_fraction >= 0 && validation_fraction < 1,
           "train_validation_split: the validation fraction must be in [0, 1), got " << validation_fraction);
  int64_t n_val = static_cast<int64_t>(std::llround(validation_fraction * static_cast<double>(count)));
  if (validation_fraction > 0 && count >= 2) n_val = std::clamp<int64_t>(n_val, 1, count - 1);
  const std::vector<int64_t> order = shuffled_indices(count, seed);
  Split split;
  split.validation.assign(order.begin(), order.begin() + n_val);
  split.train.assign(order.begin() + n_val, order.end());
  std::sort(split.validation.begin(), split.validation.end());
  std::sort(split.train.begin(), split.train.end());
  return split;
}

std::vector<Split> k_fold_splits(int64_t count, int k, uint64_t seed) {
  CR_CHECK(k >= 2 && k <= count, "k_fold_splits: " << k << " folds of " << count
                                                   << " samples; need 2 <= folds <= samples");
  const std::vector<int64_t> order = shuffled_indices(count, seed);
  std::vector<Split> splits(static_cast<size_t>(k));
  for (int64_t i = 0; i < count; ++i) {
    const int64_t fold = i % k;  // round-robin over the shuffle: fold sizes differ by at most one
    for (int64_t f = 0; f < k; ++f)
      (f == fold ? splits[f].validation : splits[f].train).push_back(order[i]);
  }
  for (Split& s : splits) {
    std::sort(s.train.begin(), s.train.end());
    std::sort(s.validation.begin(), s.validation.end());
  }
  return splits;
}

SplitNames read_split_names(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  CR_CHECK(in, "cannot read the split file " << path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  json::Value root;
  try {
    root = json::parse(text);
  } catch (const Error& e) {
    CR_FAIL(path << " is not a split file: " << e.what());
  }
  SplitNames names;
  for (const auto& [key, out] : {std::pair{"train", &names.train}, std::pair{"validation", &names.validation}}) {
    const json::Value* list = root.kind == json::Value::Kind::Object ? root.find(key) : nullptr;
    CR_CHECK(list && list->kind == json::Value::Kind::Array, path << " has no \"" << key << "\" list of slice names");
    for (const json::Value& name : list->items) {
      CR_CHECK(name.kind == json::Value::Kind::String, path << ": \"" << key << "\" holds a non-string");
      out->push_back(name.text);
    }
  }
  return names;
}

}  // namespace covidrate::data
