#include "nn/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace covidrate {

FileLock::Outcome FileLock::acquire(const std::string& path) {
  release();
  holder_.clear();
  why_.clear();
  for (int attempt = 0; attempt < 8; ++attempt) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
      why_ = "cannot open " + path + ": " + std::strerror(errno);
      return Outcome::Unavailable;
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      if (error == EWOULDBLOCK) {
        char text[32] = {};
        const ssize_t n = ::pread(fd, text, sizeof text - 1, 0);
        if (n > 0) holder_.assign(text, static_cast<size_t>(n));
        ::close(fd);
        return Outcome::HeldByOther;
      }
      ::close(fd);
      why_ = "cannot lock " + path + ": " + std::strerror(error);
      return Outcome::Unavailable;
    }
    struct stat held {}, named {};
    if (::fstat(fd, &held) == 0 && ::lstat(path.c_str(), &named) == 0 && held.st_dev == named.st_dev &&
        held.st_ino == named.st_ino) {
      fd_ = fd;
      path_ = path;
      // Who holds it, for the message another run gives; the lock works without it.
      const std::string pid = std::to_string(::getpid());
      const bool said = ::ftruncate(fd, 0) == 0 && ::pwrite(fd, pid.data(), pid.size(), 0) == std::ssize(pid);
      (void)said;
      return Outcome::Held;
    }
    ::close(fd);  // removed by its holder after we opened it: lock the file the path names now
  }
  why_ = path + " kept being replaced while it was being locked";
  return Outcome::Unavailable;
}

void FileLock::release() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());  // while still held: the next run makes a new file
  ::close(fd_);
  fd_ = -1;
  path_.clear();
}

}  // namespace covidrate
