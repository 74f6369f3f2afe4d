#include "kernels/algorithm_cache.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <type_traits>
#include <vector>

namespace covidrate {

namespace {

constexpr const char* kMagic = "covidrate algorithm cache v1";

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> fields;
  size_t start = 0;
  for (size_t tab; (tab = line.find('\t', start)) != std::string::npos; start = tab + 1)
    fields.push_back(line.substr(start, tab - start));
  fields.push_back(line.substr(start));
  return fields;
}

// A whole field as a number, or nothing ("12x", "" and overflow are not numbers).
template <class T>
std::optional<T> parse(const std::string& s) {
  if (s.empty() || (std::is_unsigned_v<T> && s[0] == '-')) return std::nullopt;  // istream wraps "-1" around
  std::istringstream in(s);
  T v{};
  in >> v;
  if (!in || in.peek() != std::char_traits<char>::eof()) return std::nullopt;
  return v;
}

}  // namespace

AlgorithmCacheFile::AlgorithmCacheFile(std::string path, std::string identity)
    : path_(std::move(path)), identity_(std::move(identity)) {
  std::string why;
  if (!merge_from_disk(why) && !why.empty()) {
    std::fprintf(stderr, "covidrate: ignoring the algorithm cache %s: %s (it will be rewritten)\n", path_.c_str(),
                 why.c_str());
  }
}

std::optional<AlgorithmRecord> AlgorithmCacheFile::find(const std::string& key) const {
  const auto it = records_.find(key);
  if (it == records_.end()) return std::nullopt;
  return it->second;
}

bool AlgorithmCacheFile::merge_from_disk(std::string& why) {
  why.clear();
  std::ifstream in(path_, std::ios::binary);
  if (!in) return false;  // no file yet (or unreadable: then writing it fails and says so)
  std::string line;
  if (!std::getline(in, line) || line != kMagic) {
    why = "its first line is not '" + std::string(kMagic) + "'";
    return false;
  }
  if (!std::getline(in, line)) {
    why = "it ends after its first line";
    return false;
  }
  if (line != identity_) return false;  // another GPU or library: not ours to read, nor an error
  std::map<std::string, AlgorithmRecord> from_disk;
  for (int number = 3; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const std::vector<std::string> f = split_tabs(line);
    AlgorithmRecord r;
    bool ok = f.size() == 5 && !f[0].empty();
    if (ok) {
      const auto algo = parse<int>(f[1]), math = parse<int>(f[2]);
      const auto bytes = parse<uint64_t>(f[3]);
      const auto ms = parse<double>(f[4]);
      ok = algo && math && bytes && ms && *algo >= 0 && *math >= 0;
      if (ok) r = AlgorithmRecord{*algo, *math, *bytes, *ms};
    }
    if (!ok) {
      why = "line " + std::to_string(number) + " is not 'key<TAB>algo<TAB>math<TAB>workspace bytes<TAB>ms'";
      return false;
    }
    from_disk[f[0]] = r;
  }
  for (auto& [key, record] : from_disk)
    if (!forgotten_.count(key)) records_.emplace(key, record);  // emplace keeps ours
  return true;
}

bool AlgorithmCacheFile::save() {
  std::string why;
  merge_from_disk(why);  // a corrupt or foreign file is simply replaced
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path target(path_);
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  // Unique per process: two processes saving at once each rename a whole file.
  const std::string tmp = path_ + ".tmp-" + std::to_string(::getpid());
  bool ok = false;
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << kMagic << '\n' << identity_ << '\n';
    for (const auto& [key, r] : records_)
      out << key << '\t' << r.algo << '\t' << r.math << '\t' << r.workspace_bytes << '\t' << r.ms << '\n';
    out.flush();
    ok = static_cast<bool>(out);
  }
  const int err = errno;
  if (ok && std::rename(tmp.c_str(), path_.c_str()) == 0) return true;
  const int rename_err = ok ? errno : err;
  std::remove(tmp.c_str());
  if (!warned_)
    std::fprintf(stderr, "covidrate: cannot write the algorithm cache %s: %s (choices are kept for this run only)\n",
                 path_.c_str(), std::strerror(rename_err));
  warned_ = true;
  return false;
}

bool AlgorithmCacheFile::remember(const std::string& key, const AlgorithmRecord& record) {
  if (key.empty() || key.find_first_of("\t\n\r") != std::string::npos) {
    std::fprintf(stderr, "covidrate: algorithm cache key '%s' has a tab or newline: not stored\n", key.c_str());
    return false;
  }
  forgotten_.erase(key);
  records_[key] = record;
  return save();
}

bool AlgorithmCacheFile::forget(const std::string& key) {
  forgotten_.insert(key);
  records_.erase(key);
  return save();
}

std::string default_algorithm_cache_path(const std::string& file_name) {
  if (const char* v = std::getenv("COVIDRATE_CUDNN_CACHE"); v && *v) {
    const std::string s = v;
    return s == "off" || s == "0" ? std::string() : s;
  }
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
    return std::string(xdg) + "/covidrate/" + file_name;
  if (const char* home = std::getenv("HOME"); home && *home)
    return std::string(home) + "/.cache/covidrate/" + file_name;
  return {};
}

std::string file_name_part(const std::string& text) {
  std::string out = text;
  for (char& c : out) {
    const bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '-';
    if (!keep) c = '_';
  }
  return out;
}

}  // namespace covidrate
