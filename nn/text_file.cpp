#include "nn/text_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string_view>

#include "nn/error.h"

namespace covidrate {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail_writing(const std::string& path, int error) {
  CR_FAIL("cannot write " << path << ": " << std::strerror(error != 0 ? error : EIO));
}

// The file that writing PATH replaces: PATH itself, or the end of the chain of
// symbolic links that starts there. Refuses anything but a regular file (or
// nothing yet), without opening it: opening a FIFO for writing would wait for
// a reader, and a rename over a device or FIFO would replace it.
struct Target {
  std::string path;
  bool exists = false;
  mode_t mode = 0;
};

Target resolve_target(const std::string& path) {
  fs::path p = path;
  for (int hops = 0; hops < 40; ++hops) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) {
      const int error = errno;
      // Absent (or a dangling link's target): created. Any other reason (a
      // missing folder, no permission) is reported when the temporary is made.
      if (error == ENOENT || error == ENOTDIR) return {p.string(), false, 0};
      fail_writing(path, error);
    }
    if (S_ISLNK(st.st_mode)) {
      std::error_code ec;
      const fs::path link = fs::read_symlink(p, ec);
      if (ec) fail_writing(path, ec.value());
      p = link.is_absolute() ? link : p.parent_path() / link;
      continue;
    }
    CR_CHECK(S_ISREG(st.st_mode), path << " exists and is not a regular file");
    return {p.string(), true, st.st_mode};
  }
  fail_writing(path, ELOOP);
}

std::atomic<uint64_t> temp_counter{0};

// fsync(PATH); 0 or the errno.
int fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  const int error = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return error;
}

// Some file systems (FUSE, 9p, CIFS mounts) cannot flush a folder: EINVAL or
// ENOTSUP there is no failure of ours, a file's data is what must be flushed.
bool folder_cannot_sync(int error) { return error == EINVAL || error == ENOTSUP || error == EROFS; }

// After a rename: the folder that now holds the name, flushed so that the
// name survives a power cut. Best effort: the rename has happened and the
// contents are on the disk, and some file systems cannot flush a folder.
void sync_folder_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  fsync_path(parent.empty() ? std::string(".") : parent.string());
}

}  // namespace

AtomicFile::AtomicFile(const std::string& path) : path_(path) {
  const Target target = resolve_target(path);
  target_ = target.path;
  const std::string stem = target_ + ".tmp-" + std::to_string(::getpid()) + "-";
  for (int attempt = 0; fd_ < 0; ++attempt) {
    temp_ = stem + std::to_string(temp_counter++);
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    // EEXIST: a leftover of a killed process that had the same id.
    if (fd_ < 0 && (errno != EEXIST || attempt >= 100)) {
      const int error = errno;
      temp_.clear();
      fail_writing(path, error);
    }
  }
  // A replaced file keeps its permissions.
  if (target.exists && ::fchmod(fd_, target.mode & 07777) != 0) fail(errno);
}

AtomicFile::~AtomicFile() {
  if (!committed_) discard();
}

void AtomicFile::discard() noexcept {
  if (stream_) std::fclose(stream_);  // the cookie has no close function: fd_ stays open
  stream_ = nullptr;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!temp_.empty()) ::unlink(temp_.c_str());
  temp_.clear();
}

void AtomicFile::fail(int error) {
  discard();
  fail_writing(path_, error);
}

void AtomicFile::write(const void* data, size_t n) {
  CR_CHECK(fd_ >= 0, "cannot write " << path_ << ": the file is already closed");
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t put = ::write(fd_, p, n);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) fail(put < 0 ? errno : EIO);
    p += put;
    n -= static_cast<size_t>(put);
  }
}

ssize_t AtomicFile::stream_write(void* cookie, const char* data, size_t n) {
  auto* self = static_cast<AtomicFile*>(cookie);
  size_t done = 0;
  while (done < n) {
    const ssize_t put = ::write(self->fd_, data + done, n - done);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) {
      if (self->stream_error_ == 0) self->stream_error_ = put < 0 ? errno : EIO;
      return 0;  // fopencookie: 0 on error (the stream's error flag is set)
    }
    done += static_cast<size_t>(put);
  }
  return static_cast<ssize_t>(n);
}

std::FILE* AtomicFile::stream() {
  CR_CHECK(fd_ >= 0, "cannot write " << path_ << ": the file is already closed");
  if (!stream_) {
    stream_ = ::fopencookie(this, "w", cookie_io_functions_t{nullptr, &AtomicFile::stream_write, nullptr, nullptr});
    if (!stream_) fail(errno);
  }
  return stream_;
}

void AtomicFile::commit() {
  CR_CHECK(fd_ >= 0, "cannot write " << path_ << ": the file is already closed");
  if (stream_) {
    const bool flushed = std::fflush(stream_) == 0 && !std::ferror(stream_);
    const int error = stream_error_ != 0 ? stream_error_ : errno;
    std::fclose(stream_);
    stream_ = nullptr;
    if (!flushed || stream_error_ != 0) fail(error);
  }
  if (::fsync(fd_) != 0) fail(errno);
  // Linux releases the descriptor even when close reports an error.
  const int closed = ::close(fd_);
  fd_ = -1;
  if (closed != 0) fail(errno);
  if (::rename(temp_.c_str(), target_.c_str()) != 0) fail(errno);
  committed_ = true;
  sync_folder_of(target_);
}

void write_file_atomically(const std::string& path, std::string_view bytes) {
  AtomicFile file(path);
  file.write(bytes.data(), bytes.size());
  file.commit();
}

void write_text_atomically(const std::string& path, const std::string& text) { write_file_atomically(path, text); }

bool is_writer_temporary(const std::string& name) {
  // NAME.tmp-<pid>-<n>: digits, a dash, digits, to the end.
  const size_t at = name.rfind(".tmp-");
  if (at == std::string::npos || at == 0) return false;
  const std::string rest = name.substr(at + 5);
  const size_t dash = rest.find('-');
  const auto digits = [](std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  return dash != std::string::npos && digits(std::string_view(rest).substr(0, dash)) &&
         digits(std::string_view(rest).substr(dash + 1));
}

int remove_stale_temporaries(const std::string& folder, const std::vector<std::string>& targets) {
  int removed = 0;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(folder, ec)) {
    const std::string name = entry.path().filename().string();
    if (!is_writer_temporary(name) || !fs::is_regular_file(entry.symlink_status(ec))) continue;
    const size_t at = name.rfind(".tmp-");
    if (std::find(targets.begin(), targets.end(), name.substr(0, at)) == targets.end()) continue;
    const std::string rest = name.substr(at + 5);
    const long pid = std::strtol(rest.c_str(), nullptr, 10);
    // A live writer's, this process's own included, stays.
    if (pid > 0 && (pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH)) continue;
    if (fs::remove(entry.path(), ec)) ++removed;
  }
  return removed;
}

std::string start_temp_folder(const std::string& out) {
  const std::string tmp = out + ".tmp";
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(tmp, ec);
  if (fs::exists(status)) {
    // Ours: it holds the mark, or the mark's own temporary (a run killed while
    // writing it), or nothing (killed before).
    bool ours = fs::is_directory(status);
    if (ours && !fs::is_empty(tmp, ec)) {
      ours = false;
      for (const fs::directory_entry& entry : fs::directory_iterator(tmp, ec))
        ours = ours || entry.path().filename().string().starts_with(kPartialMarker);
    }
    CR_CHECK(ours, tmp << " exists without covidrate's mark (a folder of yours, or one an interrupted covidrate "
                          "older than 2026-11-28 left), and covidrate writes "
                       << out << " there before renaming it: move it away, or choose another output");
    remove_temp_folder(tmp);  // an interrupted run's
    CR_CHECK(!fs::exists(tmp, ec), "cannot write " << out << ": " << tmp << " (an interrupted run's) cannot be removed");
  }
  fs::create_directories(tmp, ec);
  if (ec) fail_writing(out, ec.value());
  try {
    write_file_atomically((fs::path(tmp) / kPartialMarker).string(),
                          "covidrate writes " + out + " here, and renames it when it is complete\n");
  } catch (const Error&) {
    remove_temp_folder(tmp);  // a full disk: nothing left behind
    throw;
  }
  return tmp;
}

void remove_temp_folder(const std::string& tmp) noexcept {
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(tmp, ec))
    if (!entry.path().filename().string().starts_with(kPartialMarker)) fs::remove_all(entry.path(), ec);
  fs::remove_all(tmp, ec);
}

void publish_folder(const std::string& tmp, const std::string& out) {
  std::error_code ec;
  for (fs::recursive_directory_iterator it(tmp, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::file_status status = it->symlink_status(ec);
    if (ec) break;
    if (!fs::is_regular_file(status) && !fs::is_directory(status)) continue;
    const int error = fsync_path(it->path().string());
    if (error != 0 && !(fs::is_directory(status) && folder_cannot_sync(error))) fail_writing(out, error);
  }
  if (ec) fail_writing(out, ec.value());
  if (const int error = fsync_path(tmp); error != 0 && !folder_cannot_sync(error)) fail_writing(out, error);
  if (::rename(tmp.c_str(), out.c_str()) != 0) fail_writing(out, errno);
  // The mark goes only once the folder has its name: removed before, a kill
  // in between would leave a DIR.tmp without it, which the next run would take
  // for the user's and refuse. Killed between the rename and this, the
  // finished folder keeps a stray mark, which nothing reads.
  if (fs::remove(fs::path(out) / kPartialMarker, ec)) fsync_path(out);
  sync_folder_of(out);
}

std::string csv_field(std::string_view text) {
  if (text.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(text);
  std::string quoted = "\"";
  for (const char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

std::string xml_escape(std::string_view text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

uint64_t append_to_file(const std::string& path, std::string_view bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) CR_CHECK(S_ISREG(st.st_mode), path << " exists and is not a regular file");
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) fail_writing(path, errno);
  int error = 0;
  off_t old_size = 0;
  if (::fstat(fd, &st) == 0) old_size = st.st_size;
  else error = errno;
  for (size_t done = 0; error == 0 && done < bytes.size();) {
    const ssize_t put = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) error = put < 0 ? errno : EIO;
    else done += static_cast<size_t>(put);
  }
  uint64_t size = 0;
  if (error == 0 && ::fstat(fd, &st) == 0) size = static_cast<uint64_t>(st.st_size);
  else if (error == 0) error = errno;
  if (error != 0 && ::ftruncate(fd, old_size) != 0) {
    // Best effort: the caller reports the write error, not this one.
  }
  if (::close(fd) != 0 && error == 0) error = errno;
  if (error != 0) fail_writing(path, error);
  return size;
}

}  // namespace covidrate
