// What the subcommands share: one loop over the command line (ArgScanner),
// checked option values, the network options, and progress on stderr.
#pragma once
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/load_weights.h"
#include "nn/device.h"
#include "nn/file_lock.h"
#include "nn/text_file.h"

namespace covidrate::tools {

// A command line the command does not take: an unknown option, an option
// without its value or with a value it does not take, a missing argument.
// main() (tools/covidrate.cpp) prints "covidrate CMD: MESSAGE" and where the
// options are described, and exits with status 2; a failure while working
// (covidrate::Error: a missing file, bad data) exits with status 1.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// UsageError with the streamed message unless cond: CR_USAGE_CHECK(n > 0, "--n must be positive").
#define CR_USAGE_CHECK(cond, msg)                             \
  do {                                                        \
    if (!(cond)) {                                            \
      std::ostringstream cr_usage_message_;                   \
      cr_usage_message_ << msg;                               \
      throw ::covidrate::tools::UsageError(cr_usage_message_.str()); \
    }                                                         \
  } while (0)

// Option values. Each takes the whole text or throws UsageError naming the
// option, what it takes and what it got.
// A finite number in [lo, hi].
double parse_number(const std::string& option, const std::string& text,
                    double lo = -std::numeric_limits<double>::infinity(),
                    double hi = std::numeric_limits<double>::infinity());
// An integer in [lo, hi], written in decimal digits (read exactly, not through a double).
int64_t parse_integer(const std::string& option, const std::string& text, int64_t lo, int64_t hi);
// The largest --seed the commands take (any int64 >= 0).
inline constexpr int64_t kMaxSeed = std::numeric_limits<int64_t>::max();
// --precision: "f32" or "bf16", the dtype the network computes in.
DType parse_precision(const std::string& option, const std::string& text);
// --device: "cpu", "cuda" or "gpu". An unknown name is a UsageError; asking
// for CUDA where there is none is a failure to run (covidrate::Error, status
// 1), as it is when COVIDRATE_DEVICE asks for it.
Device parse_device_option(const std::string& option, const std::string& text);

// What an error says to the user: e.what(), except for the standard library's
// filesystem errors, whose text names the call ("filesystem error: cannot
// remove: Not a directory [x]"); those become "x: Not a directory".
std::string error_text(const std::exception& e);

// Checks, before any work, that `path` can take an output file: its folder
// exists, it is not something other than a regular file (a folder, a FIFO, a
// device; symbolic links are followed), and it is none of `inputs` (a weights
// file, a log...: an output written over an input would destroy it), nor in
// one of `input_folders` (a folder of slices read as a whole: the file would
// replace a slice, or join them next time). Throws covidrate::Error naming
// `option` and the path.
void check_output_file(const std::string& option, const std::string& path, const std::vector<std::string>& inputs,
                       const std::vector<std::string>& input_folders = {});

// A folder written as DIR.tmp and renamed to DIR once whole: removed with
// whatever it holds unless `kept` (set after the rename), so that a failure on
// the way leaves nothing that looks like a result.
struct TempFolder {
  explicit TempFolder(std::filesystem::path folder) : path(std::move(folder)) {}
  std::filesystem::path path;
  bool kept = false;
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;
  ~TempFolder() {
    if (!kept && !path.empty()) remove_temp_folder(path.string());  // its mark last
  }
};

// Checks, before any work, that an output folder can be made at `path`: the
// folders missing above it are made when it is written, but a file in their
// place, or a folder that takes no new files (read-only, no permission, full),
// would fail only then, after the work. Throws covidrate::Error naming
// `command`, `option`, the path and the file or folder in the way.
void check_output_folder(const std::string& command, const std::string& option, const std::string& path);

// One run at a time per output folder, held for the life of the command:
//   const OutputLock lock("segment", out);
// A second covidrate run given the same folder (however spelled: the absolute,
// normalized path counts) is refused, naming the process that holds it. Two
// runs into one folder would each clear and rename the other's half-written
// study or checkpoint. The lock is a FileLock (nn/file_lock.h) on a file named
// after that path in the user's cache (~/.cache/covidrate/locks; else the
// temporary folder), so the user's folders get no lock files and a killed run
// leaves no lock behind. Where no lock can be had, the run goes on and says so.
class OutputLock {
 public:
  OutputLock(const std::string& command, const std::string& path);

 private:
  FileLock lock_;
};

// The loop over a command's arguments, the same in every command:
//   ArgScanner args(argc, argv);
//   while (args.next()) {
//     if (args.help()) return usage(stdout), 0;
//     else if (args.is("--out")) out = args.value();
//     else if (args.is("--tiles")) tiles = args.integer(1, 64);
//     else if (args.is("--json")) json = true;
//     else inputs.push_back(args.positional());  // UsageError for an unknown option
//   }
// argv[0] is the command's name (main passes the arguments from it on).
class ArgScanner {
 public:
  ArgScanner(int argc, char** argv) : argc_(argc), argv_(argv) {}
  // Moves to the next argument; false after the last.
  bool next();
  const std::string& current() const { return current_; }
  bool is(std::string_view option) const { return current_ == option; }
  bool help() const { return is("--help") || is("-h"); }
  // The current option's value: the next argument (so "--threshold -1"
  // reaches the range check). UsageError when there is none, when it is empty
  // (an unset variable in a script), or when it starts with "--" (the value
  // forgotten: "--out --json").
  std::string value();
  // The value of an option that names an output folder, without trailing
  // slashes: "out/" and "out" are the same folder, and the folder is written
  // as "out.tmp" beside it first (not "out/.tmp", inside the folder to be).
  std::string folder_value();
  // True when the next argument can be an optional value (exists and is not an option).
  bool has_optional_value() const;
  double number(double lo = -std::numeric_limits<double>::infinity(),
                double hi = std::numeric_limits<double>::infinity()) {
    const std::string option = current_;
    return parse_number(option, value(), lo, hi);
  }
  int64_t integer(int64_t lo, int64_t hi) {
    const std::string option = current_;
    return parse_integer(option, value(), lo, hi);
  }
  // The current argument as an operand (a path, an action): UsageError
  // "unknown option" when it starts with '-' (a lone "-" too: no command
  // reads standard input).
  std::string positional() const;
  [[noreturn]] void unknown() const;

 private:
  int argc_;
  char** argv_;
  int at_ = 0;
  std::string current_;
};

// The options of every command that runs trained weights (eval, segment,
// pseudo-label): where the network runs, what it computes in, and the
// architecture when the weights' metadata lacks it.
struct NetworkOptions {
  // --device, else $COVIDRATE_DEVICE, else cpu. The environment is read only
  // after the whole line is scanned (resolve_device), so that --help and
  // --device work whatever it holds.
  Device device = Device::CPU;
  bool device_given = false;
  DType precision = DType::F32;
  ArchitectureOverrides architecture;  // --arch, --width, --size, --no-cpb, --no-se
};
// device = default_device() ($COVIDRATE_DEVICE, else cpu) unless --device was given.
void resolve_device(NetworkOptions& o);
// True when the scanner's current option is --device, --precision, --arch,
// --width, --size, --no-cpb or --no-se, read into `o` (with its value, if it
// takes one); false for any other argument.
bool parse_network_option(ArgScanner& args, NetworkOptions& o);

// A remaining or elapsed time as people say it: "2.5 s", "40 s", "1.5 min", "12 min", "2 h 05 min".
std::string duration_text(double seconds);

// Progress of a long stage on stderr, called with (done, total) units: the
// rate and the remaining time, in place on a terminal, a line per quarter in a
// log. (0, total) starts the clock. `what` begins each line ("segment study1");
// `unit` names what is counted ("slices", "pairs").
class Progress {
 public:
  explicit Progress(std::string what, std::string unit = "slices");
  void operator()(int64_t done, int64_t total);
  // Ends a terminal's line left open by a stage that stopped short of its total.
  void end();

 private:
  std::string what_, unit_;
  bool open_line_ = false;  // a terminal line without its newline yet
  bool tty_;
  int64_t quarter_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace covidrate::tools
