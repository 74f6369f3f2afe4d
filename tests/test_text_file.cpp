// The checked atomic writer (nn/text_file.h) every report, picture, volume and
// weights file goes through: contents replaced whole or not at all, a failed
// write reported with the file and the reason and leaving no temporary behind,
// symbolic links kept, FIFOs and devices refused (never opened, never replaced);
// the checked append of the training log; and the covidrate program's exit
// status when its standard output cannot be written.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "nn/error.h"
#include "nn/text_file.h"
#include "support/run_covidrate.h"
#include "temp_files.h"

using namespace covidrate;
namespace fs = std::filesystem;

namespace {

std::string read_all(const std::string& path) {
  const std::vector<char> bytes = test::read_bytes(path);
  return {bytes.begin(), bytes.end()};
}

std::vector<std::string> names_in(const std::string& folder) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) names.push_back(entry.path().filename().string());
  return names;
}

// The message of the covidrate::Error that f throws ("" when it throws none).
template <class F> std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A file-size limit on this process for the scope (SIGXFSZ ignored): writes
// past `bytes` fail with EFBIG, as writes on a full disk fail with ENOSPC.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_) == 0);
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = old_;
    limit.rlim_cur = bytes;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &limit) == 0);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    std::signal(SIGXFSZ, old_handler_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

 private:
  rlimit old_{};
  void (*old_handler_)(int) = nullptr;
};

}  // namespace

TEST_CASE("write_file_atomically creates and replaces a file whole, leaving no temporary") {
  test::TempDir dir;
  const std::string path = dir.file("report.json");
  write_file_atomically(path, "first");
  CHECK(read_all(path) == "first");
  const std::string bytes("a\0b\nc", 5);  // bytes as they are
  write_file_atomically(path, bytes);
  CHECK(read_all(path) == bytes);
  write_text_atomically(path, "");
  CHECK(fs::file_size(path) == 0);
  CHECK(names_in(dir.path()) == std::vector<std::string>{"report.json"});
}

TEST_CASE("a replaced file keeps its permissions") {
  test::TempDir dir;
  const std::string path = dir.file("private.txt");
  write_text_atomically(path, "one");
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
  write_text_atomically(path, "two");
  CHECK(read_all(path) == "two");
  CHECK((fs::status(path).permissions() & fs::perms::all) == (fs::perms::owner_read | fs::perms::owner_write));
}

TEST_CASE("a write that fails midway names the file and the reason, and leaves the old file and no temporary") {
  test::TempDir dir;
  const std::string path = dir.file("overview.png");
  write_file_atomically(path, "the old picture");
  const std::string big(64 * 1024, 'x');
  std::string message;
  {
    FileSizeLimit limit(4096);  // the first write() is cut short, the next fails
    message = error_of([&] { write_file_atomically(path, big); });
  }
  CHECK_MESSAGE(message.find("cannot write " + path) != std::string::npos, message);
  CHECK_MESSAGE(message.find("File too large") != std::string::npos, message);
  CHECK(read_all(path) == "the old picture");
  CHECK(names_in(dir.path()) == std::vector<std::string>{"overview.png"});
}

TEST_CASE("a file that cannot be created names the file and the reason") {
  test::TempDir dir;
  const std::string path = dir.file("no/such/folder/report.json");
  const std::string message = error_of([&] { write_text_atomically(path, "{}"); });
  CHECK_MESSAGE(message.find("cannot write " + path) != std::string::npos, message);
  CHECK_MESSAGE(message.find("No such file or directory") != std::string::npos, message);
}

TEST_CASE("a FIFO, a folder or a device at the path is refused, never opened nor replaced") {
  test::TempDir dir;
  SUBCASE("a FIFO") {
    const std::string fifo = dir.file("fifo");
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    // A reader, so that a writer that did open the FIFO would not wait forever:
    // the test then fails on what it finds rather than hangs.
    const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
    REQUIRE(reader >= 0);
    const std::string message = error_of([&] { write_text_atomically(fifo, "report"); });
    char byte = 0;
    const ssize_t got = ::read(reader, &byte, 1);
    ::close(reader);
    CHECK_MESSAGE(message == fifo + " exists and is not a regular file", message);
    CHECK(got <= 0);  // nothing was written into it
    CHECK(fs::is_fifo(fs::symlink_status(fifo)));
    CHECK(names_in(dir.path()) == std::vector<std::string>{"fifo"});
  }
  SUBCASE("a folder") {
    const std::string folder = dir.file("folder");
    fs::create_directories(folder);
    const std::string message = error_of([&] { write_text_atomically(folder, "report"); });
    CHECK_MESSAGE(message == folder + " exists and is not a regular file", message);
    CHECK(fs::is_directory(folder));
    CHECK(names_in(dir.path()) == std::vector<std::string>{"folder"});
  }
  SUBCASE("a device") {
    // A null device made in the test's folder (root only), never /dev's own:
    // a writer that renamed over the device would replace it.
    const std::string device = dir.file("null");
    if (::mknod(device.c_str(), S_IFCHR | 0666, ::makedev(1, 3)) != 0) {
      MESSAGE("cannot make a device node here (not root): skipped");
      return;
    }
    const std::string message = error_of([&] { write_text_atomically(device, "report"); });
    CHECK_MESSAGE(message == device + " exists and is not a regular file", message);
    CHECK(fs::is_character_file(fs::symlink_status(device)));
    CHECK(names_in(dir.path()) == std::vector<std::string>{"null"});
  }
  SUBCASE("a symbolic link to a FIFO") {
    const std::string fifo = dir.file("fifo"), link = dir.file("link");
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    fs::create_symlink(fifo, link);
    const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
    REQUIRE(reader >= 0);
    const std::string message = error_of([&] { write_text_atomically(link, "report"); });
    ::close(reader);
    CHECK_MESSAGE(message == link + " exists and is not a regular file", message);
    CHECK(fs::is_symlink(link));
    CHECK(fs::is_fifo(fs::symlink_status(fifo)));
  }
}

TEST_CASE("a symbolic link is kept and the file it points to is replaced") {
  test::TempDir dir;
  fs::create_directories(dir.file("a"));
  fs::create_directories(dir.file("b"));
  const std::string target = dir.file("b/real.json"), link = dir.file("a/link.json");
  write_text_atomically(target, "old");
  SUBCASE("a relative link") { fs::create_symlink("../b/real.json", link); }
  SUBCASE("an absolute link") { fs::create_symlink(target, link); }
  SUBCASE("a link to a link") {
    fs::create_symlink(target, dir.file("a/first.json"));
    fs::create_symlink("first.json", link);
  }
  write_text_atomically(link, "new");
  CHECK(fs::is_symlink(link));
  CHECK(read_all(target) == "new");
  CHECK(read_all(link) == "new");
  CHECK(names_in(dir.file("b")) == std::vector<std::string>{"real.json"});
}

TEST_CASE("a dangling symbolic link: the file it names is created, the link stays") {
  test::TempDir dir;
  const std::string link = dir.file("link.json");
  fs::create_symlink("real.json", link);
  write_text_atomically(link, "made");
  CHECK(fs::is_symlink(link));
  CHECK(read_all(dir.file("real.json")) == "made");
}

TEST_CASE("AtomicFile: pieces, a stdio stream, and nothing left when not committed") {
  test::TempDir dir;
  const std::string path = dir.file("volume.nii");
  {
    AtomicFile file(path);
    file.write("head", 4);
    std::fputs("-body", file.stream());
    std::fputs("-tail", file.stream());
    CHECK_FALSE(fs::exists(path));  // nothing at the path until commit
    file.commit();
  }
  CHECK(read_all(path) == "head-body-tail");
  {
    AtomicFile file(path);
    file.write("abandoned", 9);
  }  // destroyed without commit, as when an exception passes
  CHECK(read_all(path) == "head-body-tail");
  CHECK(names_in(dir.path()) == std::vector<std::string>{"volume.nii"});

  // A failed write through the stream is reported by commit, with its reason.
  std::string message;
  {
    FileSizeLimit limit(4096);
    AtomicFile file(path);
    const std::string big(64 * 1024, 'y');
    std::fwrite(big.data(), 1, big.size(), file.stream());
    message = error_of([&] { file.commit(); });
  }
  CHECK_MESSAGE(message.find("cannot write " + path + ": File too large") != std::string::npos, message);
  CHECK(read_all(path) == "head-body-tail");
  CHECK(names_in(dir.path()) == std::vector<std::string>{"volume.nii"});
}

TEST_CASE("start_temp_folder replaces an interrupted run's folder, and refuses to touch a user's") {
  test::TempDir dir;
  const std::string out = dir.file("study");
  const std::string tmp = start_temp_folder(out);
  CHECK(tmp == out + ".tmp");
  CHECK(fs::exists(tmp + "/" + kPartialMarker));
  write_text_atomically(tmp + "/half-written.json", "{");
  // Interrupted: the next run starts afresh.
  CHECK(start_temp_folder(out) == tmp);
  CHECK_FALSE(fs::exists(tmp + "/half-written.json"));
  publish_folder(tmp, out);
  CHECK_FALSE(fs::exists(out + "/" + kPartialMarker));  // the mark goes once the folder has its name
  // Killed while writing the mark: only its temporary is there; still ours.
  fs::create_directories(out + "-2.tmp");
  write_text_atomically(out + "-2.tmp/" + kPartialMarker + ".tmp-4242-0", "");
  CHECK(start_temp_folder(out + "-2") == out + "-2.tmp");
  // A folder of that name without the mark is someone else's: kept, and the error names it.
  const std::string other = dir.file("results");
  fs::create_directories(other + ".tmp");
  write_text_atomically(other + ".tmp/notes.txt", "mine");
  CHECK_THROWS_WITH_AS(start_temp_folder(other), doctest::Contains((other + ".tmp exists without covidrate's mark").c_str()),
                       Error);
  CHECK(read_all(other + ".tmp/notes.txt") == "mine");
  // An empty one, or a file of that name: the empty folder is taken, the file refused.
  fs::remove(other + ".tmp/notes.txt");
  CHECK(start_temp_folder(other) == other + ".tmp");
  write_text_atomically(dir.file("plain.tmp"), "a file");
  CHECK_THROWS_AS(start_temp_folder(dir.file("plain")), Error);
  CHECK(read_all(dir.file("plain.tmp")) == "a file");
}

TEST_CASE("the temporaries killed writers left are recognized and removed; a live writer's stay") {
  CHECK(is_writer_temporary("best.safetensors.tmp-4242-0"));
  CHECK(is_writer_temporary(".covidrate-partial.tmp-1-17"));
  CHECK_FALSE(is_writer_temporary("notes.tmp"));
  CHECK_FALSE(is_writer_temporary("a.tmp-12"));
  CHECK_FALSE(is_writer_temporary("a.tmp-12-x"));
  CHECK_FALSE(is_writer_temporary(".tmp-1-2"));
  test::TempDir dir;
  // A writer that has exited: its process id is free.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  REQUIRE(child > 0);
  ::waitpid(child, nullptr, 0);
  const std::string dead = dir.file("best.safetensors.tmp-" + std::to_string(child) + "-0");
  const std::string mine = dir.file("curves.svg.tmp-" + std::to_string(::getpid()) + "-3");
  // A user's file that only looks like one, and a dead writer's of a file not named.
  const std::string users = dir.file("eval.tmp-2024-06");
  const std::string other = dir.file("notes.txt.tmp-" + std::to_string(child) + "-0");
  for (const std::string& f : {dead, mine, users, other, dir.file("log.jsonl")}) write_text_atomically(f, "x");
  CHECK(remove_stale_temporaries(dir.path(), {"best.safetensors", "curves.svg"}) == 1);
  CHECK_FALSE(fs::exists(dead));
  for (const std::string& f : {mine, users, other, dir.file("log.jsonl")}) CHECK(fs::exists(f));
}

TEST_CASE("publish_folder moves a whole folder tree into place, and names the output when it cannot") {
  test::TempDir dir;
  const std::string tmp = dir.file("study.tmp"), out = dir.file("study");
  fs::create_directories(tmp + "/masks");
  write_text_atomically(tmp + "/report.json", "{}");
  write_text_atomically(tmp + "/masks/0.png", "png");
  publish_folder(tmp, out);
  CHECK_FALSE(fs::exists(tmp));
  CHECK(read_all(out + "/report.json") == "{}");
  CHECK(read_all(out + "/masks/0.png") == "png");

  // An output that is already there with contents is not replaced.
  fs::create_directories(tmp);
  write_text_atomically(tmp + "/report.json", "new");
  try {
    publish_folder(tmp, out);
    FAIL("publish_folder replaced a folder with contents");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("cannot write " + out + ": ") == 0);
  }
  CHECK(read_all(out + "/report.json") == "{}");
  // Nothing to publish.
  const std::string absent_out = dir.file("absent-out");
  CHECK_THROWS_WITH_AS(publish_folder(dir.file("absent"), absent_out), doctest::Contains(absent_out.c_str()), Error);
  CHECK_FALSE(fs::exists(dir.file("absent-out")));
}

TEST_CASE("append_to_file appends, returns the length, and reports a failed append with the reason") {
  test::TempDir dir;
  const std::string path = dir.file("log.jsonl");
  CHECK(append_to_file(path, "{\"epoch\": 1}\n") == 13);
  CHECK(append_to_file(path, "{\"epoch\": 2}\n") == 26);
  std::string message;
  {
    FileSizeLimit limit(1024);
    message = error_of([&] { append_to_file(path, std::string(4096, 'z')); });
  }
  CHECK_MESSAGE(message.find("cannot write " + path + ": File too large") != std::string::npos, message);
  CHECK(read_all(path) == "{\"epoch\": 1}\n{\"epoch\": 2}\n");  // cut back: no half line
  const std::string fifo = dir.file("fifo");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK(error_of([&] { append_to_file(fifo, "x"); }) == fifo + " exists and is not a regular file");
}

TEST_CASE("covidrate: standard output that cannot be written is exit 1 with the reason") {
  if (!fs::is_character_file("/dev/full")) {
    MESSAGE("no /dev/full here: skipped");
    return;
  }
  test::TempDir dir;
  const std::string err = dir.file("stderr.txt");
  for (const char* command : {"version", "--help", "model --width 0.0625 --size 64"}) {
    CAPTURE(command);
    const int rc = std::system((test::covidrate_program() + " " + command + " > /dev/full 2> " + err).c_str());
    REQUIRE(WIFEXITED(rc));
    CHECK(WEXITSTATUS(rc) == 1);
    const std::string message = test::read_text_file(err);
    CHECK_MESSAGE(message.find("covidrate: cannot write to standard output: No space left on device") !=
                      std::string::npos,
                  message);
  }
  // And a command that does write its output still exits 0.
  const int rc = std::system((test::covidrate_program() + " version > /dev/null 2> " + err).c_str());
  REQUIRE(WIFEXITED(rc));
  CHECK(WEXITSTATUS(rc) == 0);
}

TEST_CASE("csv_field quotes what would break a CSV row, and only that") {
  CHECK(csv_field("study_01") == "study_01");
  CHECK(csv_field("") == "");
  CHECK(csv_field("a,b") == "\"a,b\"");
  CHECK(csv_field("say \"hi\"") == "\"say \"\"hi\"\"\"");
  CHECK(csv_field("two\nlines") == "\"two\nlines\"");
}

TEST_CASE("xml_escape makes text safe in HTML and SVG content and in either kind of quoted attribute") {
  CHECK(xml_escape("dec1  512 x 64 x 64") == "dec1  512 x 64 x 64");
  CHECK(xml_escape("a<b && c>d") == "a&lt;b &amp;&amp; c&gt;d");
  CHECK(xml_escape("O'Brien \"CT\"") == "O&apos;Brien &quot;CT&quot;");
  CHECK(xml_escape("") == "");
}
