// Measured algorithm choices that outlive the process: a small text file per
// GPU model and library version, so that a program which segments one study
// and exits does not time every cuDNN algorithm again on each run.
//
// Why: cuDNN's measuring search (cudnnFind*Ex) runs every candidate algorithm
// once per convolution shape and direction. On an H200 the first study of a
// `segment --device cuda` run spent 3.8 s in its network phase against 0.2 s
// for the same study once the choices were made (docs/benchmarks.md), and a
// deployment that runs one process per study paid that every time.
//
// The file is only a cache: a missing, unreadable, corrupt or foreign file is
// ignored (a corrupt one with a warning) and rewritten; a failure to write it
// warns once and the run goes on. Its first line names what the choices are
// valid for (`identity`: GPU model, compute capability, cuDNN version); a file
// whose identity differs is not used. Writes go to a temporary file beside it
// and are renamed into place, merging what other processes added meanwhile.
//
// Format (tab-separated, one choice per line after the two header lines):
//   covidrate algorithm cache v1
//   <identity>
//   <key> \t <algo> \t <math> \t <workspace bytes> \t <measured ms>
// The key is the caller's text (kernels/cuda/cudnn_conv.cpp: direction and
// shape); it may not contain tabs or newlines.
//
// This file is plain C++ (no CUDA) so that the CPU-only build tests it.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>

namespace covidrate {

struct AlgorithmRecord {
  int algo = 0;
  int math = 0;
  uint64_t workspace_bytes = 0;
  double ms = 0;  // what the search measured; for people reading the file
  bool operator==(const AlgorithmRecord&) const = default;
};

class AlgorithmCacheFile {
 public:
  // Reads `path` if it exists and was written for `identity`.
  AlgorithmCacheFile(std::string path, std::string identity);

  const std::string& path() const { return path_; }
  std::optional<AlgorithmRecord> find(const std::string& key) const;
  size_t size() const { return records_.size(); }

  // Records a choice and writes the file at once (choices are made once per
  // shape, a few dozen per network, so a write each is cheap). Returns whether
  // the file was written; a failure warns on stderr the first time only.
  bool remember(const std::string& key, const AlgorithmRecord& record);
  // Drops a choice that no longer works, and writes the file.
  bool forget(const std::string& key);

 private:
  // Adds the file's records that this process does not hold (another process
  // wrote them); ours win where both have a key. False when the file was not
  // usable (the reason in `why`, empty when it simply does not exist).
  bool merge_from_disk(std::string& why);
  bool save();

  std::string path_, identity_;
  std::map<std::string, AlgorithmRecord> records_;
  std::set<std::string> forgotten_;  // keys dropped here, not to be merged back
  bool warned_ = false;
};

// Where a cache file named `file_name` lives: COVIDRATE_CUDNN_CACHE when set
// (a file path; "off" or "0" turns the cache off: returns ""), else
// $XDG_CACHE_HOME/covidrate/<file_name>, else $HOME/.cache/covidrate/<file_name>;
// "" when none of these is set.
std::string default_algorithm_cache_path(const std::string& file_name);

// `text` with every character outside [A-Za-z0-9.-] replaced by '_': a GPU's
// name as part of a file name.
std::string file_name_part(const std::string& text);

}  // namespace covidrate
