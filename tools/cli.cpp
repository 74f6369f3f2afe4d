#include "tools/cli.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <vector>

#include "data/report.h"
#include "nn/error.h"

namespace covidrate::tools {

namespace {
// A number for messages: "1e+09" rather than "1000000000.000000".
std::string short_number(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}
}  // namespace

double parse_number(const std::string& option, const std::string& text, double lo, double hi) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  const bool whole = !text.empty() && *end == '\0' && std::isfinite(v);
  if (std::isinf(lo) && std::isinf(hi)) {
    CR_USAGE_CHECK(whole, option << " needs a number, got '" << text << "'");
  } else {
    CR_USAGE_CHECK(whole && v >= lo && v <= hi, option << " needs a number in [" << short_number(lo) << ", "
                                                        << short_number(hi) << "], got '" << text << "'");
  }
  return v;
}

int64_t parse_integer(const std::string& option, const std::string& text, int64_t lo, int64_t hi) {
  int64_t v = 0;
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, v);
  CR_USAGE_CHECK(!text.empty() && error == std::errc() && stop == end && v >= lo && v <= hi,
                 option << " needs an integer in [" << lo << ", " << hi << "], got '" << text << "'");
  return v;
}

Device parse_device_option(const std::string& option, const std::string& text) {
  CR_USAGE_CHECK(text == "cpu" || text == "cuda" || text == "gpu",
                 option << ": unknown device '" << text << "' (cpu or cuda; gpu is another name for cuda)");
  return parse_device(text);  // CUDA without a GPU: an Error, not a usage error
}

std::string error_text(const std::exception& e) {
  const auto* fs_error = dynamic_cast<const std::filesystem::filesystem_error*>(&e);
  if (!fs_error) return e.what();
  std::string paths = fs_error->path1().string();
  if (!fs_error->path2().empty()) paths += " -> " + fs_error->path2().string();
  return (paths.empty() ? std::string("a file") : paths) + ": " + fs_error->code().message();
}

std::string ArgScanner::folder_value() {
  const std::string option = current_;
  // "out/", "out/." and "./out" are "out": a folder's name is what goes beside
  // it (out.tmp, out.partial), and "out/." + ".partial" would land inside it.
  std::string v = std::filesystem::path(value()).lexically_normal().string();
  while (v.size() > 1 && v.back() == '/') v.pop_back();
  CR_USAGE_CHECK(!v.empty() && v != "/", option << " needs a folder other than '" << v << "'");
  return v;
}

void check_output_file(const std::string& option, const std::string& path, const std::vector<std::string>& inputs,
                       const std::vector<std::string>& input_folders) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path folder = fs::absolute(path, ec).parent_path();
  CR_CHECK(fs::is_directory(folder, ec), option << " " << path << ": its folder does not exist");
  for (const std::string& input : input_folders)
    CR_CHECK(input.empty() || !fs::equivalent(folder, input, ec),
             option << " " << path << " is in " << input << ", a folder of inputs: write it elsewhere");
  if (!fs::exists(path, ec)) return;
  CR_CHECK(fs::is_regular_file(path, ec), option << " " << path << " exists and is not a regular file");
  for (const std::string& input : inputs)
    CR_CHECK(input.empty() || !fs::equivalent(path, input, ec),
             option << " " << path << " is also an input (" << input << "); writing it would destroy it");
}

namespace {

// Whether a new file can be made in `folder`, by making one: an unnamed
// O_TMPFILE file, which never appears in the folder and goes with its
// descriptor; where the file system has no such files (NFS, /sys), an empty
// folder named for this process, removed at once. access(2) would not do: root
// passes its permission checks, yet a read-only mount, a pseudo file system or
// a quota still refuses the write. Fails only for refusals (permission,
// read-only, no space or quota); other errors are left to the writing to report.
void check_can_make_entries(const std::string& command, const std::string& option, const std::string& path,
                            const std::filesystem::path& folder) {
  const auto refused = [](int err) {
    return err == EACCES || err == EPERM || err == EROFS || err == ENOSPC || err == EDQUOT;
  };
  const auto fail = [&](int err) {
    CR_FAIL(command << ": cannot write " << option << " " << path << ": " << folder.string()
                    << " does not take new files (" << std::strerror(err) << ")");
  };
  const int fd = ::open(folder.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ::close(fd);
    return;
  }
  // EOPNOTSUPP: no O_TMPFILE here; EISDIR: a kernel older than O_TMPFILE.
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
    if (refused(errno)) fail(errno);
    return;
  }
  const std::string probe = (folder / (".covidrate-write-check-" + std::to_string(::getpid()))).string();
  if (::mkdir(probe.c_str(), 0700) == 0) {
    if (::rmdir(probe.c_str()) != 0)
      std::fprintf(stderr, "%s: warning: could not remove %s, made to test the folder (%s)\n", command.c_str(),
                   probe.c_str(), std::strerror(errno));
    return;
  }
  if (refused(errno)) fail(errno);
}

}  // namespace

void check_output_folder(const std::string& command, const std::string& option, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  // A folder that exists is written inside (batch segment, train, demo, ...),
  // or renamed away from above by a single study's segment, which refuses it
  // anyway: its own parent may well be closed to the user (--out ~ or
  // /scratch/$USER under a folder of root's).
  if (fs::is_directory(path, ec)) {
    check_can_make_entries(command, option, path, path);
    return;
  }
  for (fs::path p = fs::absolute(path, ec).parent_path(); !p.empty(); p = p.parent_path()) {
    const fs::file_status st = fs::status(p, ec);  // not_found, also under a file (ENOTDIR)
    if (fs::exists(st)) {
      CR_CHECK(fs::is_directory(st), command << ": cannot write " << option << " " << path << ": " << p.string()
                                             << " is a file, not a folder");
      // Where PATH.tmp is made and renamed to PATH, or the folders above PATH are made.
      check_can_make_entries(command, option, path, p);
      return;
    }
    if (ec && st.type() != fs::file_type::not_found) return;  // unreadable: left to the writing to report
    if (p == p.parent_path()) return;
  }
}

namespace {

// Where the output locks live, in order of preference: beside the cuDNN
// choices, in the user's cache ($XDG_CACHE_HOME/covidrate/locks, else
// ~/.cache/covidrate/locks), which a user's jobs share even where each gets
// its own $TMPDIR (a cluster's scheduler), and where no other user can plant
// links; then the temporary folder (a read-only home).
std::vector<std::filesystem::path> lock_folders() {
  namespace fs = std::filesystem;
  std::vector<fs::path> folders;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
    folders.push_back(fs::path(xdg) / "covidrate" / "locks");
  else if (const char* home = std::getenv("HOME"); home && *home)
    folders.push_back(fs::path(home) / ".cache" / "covidrate" / "locks");
  std::error_code ec;
  const fs::path tmp = fs::temp_directory_path(ec);
  if (!ec) folders.push_back(tmp / ("covidrate-locks-" + std::to_string(::getuid())));
  return folders;
}

}  // namespace

OutputLock::OutputLock(const std::string& command, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path target = fs::absolute(path, ec);
  const fs::path resolved = fs::weakly_canonical(target, ec);  // links in the folders above
  if (!ec) target = resolved;
  target = target.lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "out/" and "out/." are "out"
  const std::string key = target.string();
  char name[48];
  std::snprintf(name, sizeof name, "out-%016llx.lock", static_cast<unsigned long long>(data::fnv1a64(key)));
  std::string why = "no folder for it";
  for (const fs::path& folder : lock_folders()) {
    fs::create_directories(folder, ec);
    switch (lock_.acquire((folder / name).string())) {
      case FileLock::Outcome::Held:
        return;
      case FileLock::Outcome::HeldByOther:
        CR_FAIL(command << ": another covidrate run"
                        << (lock_.holder().empty() ? "" : " (process " + lock_.holder() + ")") << " is writing "
                        << key << "; wait for it to end, or choose another output");
      case FileLock::Outcome::Unavailable:
        why = lock_.why();  // the next folder, if any
        break;
    }
  }
  // Running is worth more than the lock; but say so.
  std::fprintf(stderr, "%s: note: running without the lock that keeps a second run out of %s (%s)\n",
               command.c_str(), key.c_str(), why.c_str());
}

bool ArgScanner::next() {
  if (++at_ >= argc_) return false;
  current_ = argv_[at_];
  return true;
}

std::string ArgScanner::value() {
  CR_USAGE_CHECK(at_ + 1 < argc_, current_ << " needs a value");
  const std::string v = argv_[at_ + 1];
  // An unset variable in a script ("--weights $W") would otherwise mean the
  // default, and "--out --json" would make a folder named --json.
  CR_USAGE_CHECK(!v.empty(), current_ << " needs a value, and was given an empty one");
  CR_USAGE_CHECK(!(v.size() > 2 && v.starts_with("--")),
                 current_ << " needs a value, and is followed by the option " << v
                          << " (a value that starts with -- is written ./" << v << " for a path)");
  ++at_;
  return v;
}

bool ArgScanner::has_optional_value() const { return at_ + 1 < argc_ && argv_[at_ + 1][0] != '-'; }

std::string ArgScanner::positional() const {
  if (!current_.empty() && current_[0] == '-') unknown();
  return current_;
}

void ArgScanner::unknown() const {
  if (!current_.empty() && current_[0] == '-') throw UsageError("unknown option '" + current_ + "'");
  throw UsageError("unexpected argument '" + current_ + "'");
}

void resolve_device(NetworkOptions& o) {
  if (!o.device_given) o.device = default_device();
}

bool parse_network_option(ArgScanner& args, NetworkOptions& o) {
  if (args.is("--device")) {
    o.device = parse_device_option("--device", args.value());
    o.device_given = true;
  } else if (args.is("--precision")) {
    o.precision = parse_precision("--precision", args.value());
  } else if (args.is("--width")) {
    o.architecture.width = args.number(1e-3, 4);
  } else if (args.is("--size")) {
    const int64_t size = args.integer(16, 16384);
    CR_USAGE_CHECK(size % 16 == 0, "--size must be a multiple of 16, got " << size);
    o.architecture.size = size;
  } else if (args.is("--no-cpb")) {
    o.architecture.no_cpb = true;
  } else if (args.is("--no-se")) {
    o.architecture.no_se = true;
  } else if (args.is("--arch")) {
    const std::string name = args.value();
    try {
      o.architecture.architecture = parse_architecture(name);
    } catch (const Error& e) {  // an unknown name: the command line's fault
      throw UsageError(std::string("--arch: ") + e.what());
    }
  } else {
    return false;
  }
  return true;
}

Progress::Progress(std::string what, std::string unit)
    : what_(std::move(what)), unit_(std::move(unit)), tty_(::isatty(::fileno(stderr))) {}

std::string duration_text(double seconds) {
  if (!(seconds >= 0 && seconds < 1e9)) return "?";  // NaN, negative, or beyond llround's reach
  char buf[48];
  const long long s = std::llround(seconds), minutes = (s + 30) / 60;
  if (seconds < 9.95) std::snprintf(buf, sizeof buf, "%.1f s", seconds);
  else if (s < 90) std::snprintf(buf, sizeof buf, "%lld s", s);
  else if (seconds < 597) std::snprintf(buf, sizeof buf, "%.1f min", seconds / 60);  // 1.5 min, not "2 min"
  else if (minutes < 90) std::snprintf(buf, sizeof buf, "%lld min", minutes);
  else std::snprintf(buf, sizeof buf, "%lld h %02lld min", minutes / 60, minutes % 60);
  return buf;
}

void Progress::operator()(int64_t done, int64_t total) {
  if (done == 0) {
    start_ = std::chrono::steady_clock::now();
    quarter_ = 0;
    return;
  }
  if (total < 2) return;  // one picture: nothing to wait for
  if (!tty_) {
    if (done * 4 / total == quarter_) return;
    quarter_ = done * 4 / total;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = static_cast<double>(done) / std::max(s, 1e-9);
  std::fprintf(stderr, "%s%s: %lld/%lld %s, %.1f %s/s, ETA %s   %s", tty_ ? "\r" : "", what_.c_str(),
               static_cast<long long>(done), static_cast<long long>(total), unit_.c_str(), rate, unit_.c_str(),
               duration_text(static_cast<double>(total - done) / rate).c_str(), tty_ && done < total ? "" : "\n");
  open_line_ = tty_ && done < total;
}

void Progress::end() {
  if (tty_ && open_line_) std::fprintf(stderr, "\n");
  open_line_ = false;
}

DType parse_precision(const std::string& option, const std::string& text) {
  if (text == "f32") return DType::F32;
  if (text == "bf16") return DType::BF16;
  throw UsageError(option + " must be f32 or bf16, got '" + text + "'");
}

}  // namespace covidrate::tools
