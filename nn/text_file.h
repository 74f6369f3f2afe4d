// Files written so that no reader ever sees half of one, and so that a failed
// write is never taken for a finished one. The bytes go to a temporary file
// beside the target (TARGET.tmp-<pid>-<n>); every write and the close are
// checked, the contents are flushed to the disk (fsync), and only then is the
// temporary renamed over the target (a rename within one file system is
// atomic), and the folder flushed so that the new name survives a power cut
// too. Without the first flush a power cut soon after the rename can leave
// the new name on an empty file. On any failure the temporary is removed,
// a previous file at PATH is left as it was, and covidrate::Error says which
// file and why ("cannot write out/overview.png: No space left on device").
//
// What PATH may be:
//  - absent or a regular file: it is created or replaced;
//  - a symbolic link: the file it points to is replaced (beside itself), the
//    link stays;
//  - anything else (a FIFO, a device, a folder): refused with "PATH exists and
//    is not a regular file", without opening it.
// Used for reports, pictures, splits, summaries, checkpoints and weights.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace covidrate {

void write_file_atomically(const std::string& path, std::string_view bytes);

// The same for text (no conversion: the bytes as they are).
void write_text_atomically(const std::string& path, const std::string& text);

// For writers that produce a file piece by piece (NIfTI volumes, weights):
//   AtomicFile f(path);  f.write(...); ...  f.commit();
// Destroyed without commit (an exception on the way), it removes its temporary.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // All n bytes, or covidrate::Error with the reason.
  void write(const void* data, size_t n);
  // A stdio stream onto the same file, for code that writes to a FILE*; what
  // goes through it is checked as write() checks (the first failure's reason
  // is kept and reported by commit()). Owned by this object: do not fclose it.
  std::FILE* stream();
  // Flushes the contents to the disk, closes (checked), renames the temporary
  // over the target and flushes the folder that holds it.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }

 private:
  [[noreturn]] void fail(int error);
  void discard() noexcept;
  static ssize_t stream_write(void* cookie, const char* data, size_t n);

  std::string path_;    // as given, for messages
  std::string target_;  // the file replaced: path_, or where its symlink points
  std::string temp_;
  int fd_ = -1;
  std::FILE* stream_ = nullptr;
  int stream_error_ = 0;  // errno of the first failed write through stream_
  bool committed_ = false;
};

// Output folders (a study, a checkpoint, a set of pictures) are built under a
// temporary name and renamed into place whole.
//
// start_temp_folder(out) makes that folder, out + ".tmp", afresh, with a marker
// file (kPartialMarker) in it, and returns its path. A folder of that name left
// by an interrupted run (it holds the marker) is removed first; one without the
// marker is the user's, and is refused with an error naming it, never removed.
inline constexpr const char* kPartialMarker = ".covidrate-partial";
std::string start_temp_folder(const std::string& out);

// Removes such a temporary folder with its mark last, so that a kill on the
// way leaves one the next run still knows for its own. Never throws.
void remove_temp_folder(const std::string& tmp) noexcept;

// publish_folder(tmp, out) flushes every file and folder under tmp to the
// disk, renames tmp to out (which must not exist), removes the marker and
// flushes out's parent folder: after a power cut
// there is either no `out` or a complete one -- never one whose files are
// empty, which a resumed run would pass over as done. Errors name `out`.
void publish_folder(const std::string& tmp, const std::string& out);

// Whether a file name is an AtomicFile's temporary ("best.safetensors.tmp-4242-0").
bool is_writer_temporary(const std::string& name);

// Removes the temporaries that killed writers left directly in `folder` (not
// below it) for the files named in `targets` ("best.safetensors" ->
// "best.safetensors.tmp-4242-0"), those whose process is gone. Returns how
// many. Nothing else is touched: a user's "notes.tmp-2024-06" is not ours.
int remove_stale_temporaries(const std::string& folder, const std::vector<std::string>& targets);

// One field of a CSV line: as it is, or quoted when it holds a comma, a quote or
// a line break (RFC 4180: quotes doubled). For names and paths, which may.
std::string csv_field(std::string_view text);

// Text for HTML and SVG, in element content and in quoted attributes (either
// quote): &, <, >, " and ' as entities.
std::string xml_escape(std::string_view text);

// Appends `bytes` to PATH (created when absent) and returns the file's new
// length. Not atomic -- an append-only log cannot be -- but every write and the
// close are checked: on failure the file is cut back to its old length (as far
// as that is possible) and covidrate::Error names the file and the reason.
uint64_t append_to_file(const std::string& path, std::string_view bytes);

}  // namespace covidrate
