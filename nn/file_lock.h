// An exclusive lock on a file, for "one run at a time" (tools/cli.h's
// OutputLock, the pseudo-label journal): an flock(2), which the kernel drops
// when the process ends, however it ends, so a killed run never leaves a lock
// behind that blocks the next one.
//
// The holder removes the file when it lets go, so lock files do not pile up.
// That opens one race, closed here: a run may open the file just before the
// holder removes it and lock it just after, holding a file no longer at the
// path while a third run creates and locks a new one. So after locking,
// acquire checks that the path still names the file it locked (same device and
// inode), and tries again when it does not.
#pragma once
#include <string>

namespace covidrate {

class FileLock {
 public:
  enum class Outcome {
    Held,         // this object holds the lock
    HeldByOther,  // another open file (another run) holds it; holder() names its process
    Unavailable,  // the file could not be made or locked; why() says why
  };

  FileLock() = default;
  ~FileLock() { release(); }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

  // Locks `path`, creating it (mode 0600; a symbolic link there is not
  // followed) and writing this process's id into it. Does not wait.
  Outcome acquire(const std::string& path);
  // The process id the holder wrote, after HeldByOther ("" when unknown).
  const std::string& holder() const { return holder_; }
  // What failed, after Unavailable.
  const std::string& why() const { return why_; }
  // Removes the file while still holding it, then unlocks. Nothing when not held.
  void release();

 private:
  int fd_ = -1;
  std::string path_, holder_, why_;
};

}  // namespace covidrate
