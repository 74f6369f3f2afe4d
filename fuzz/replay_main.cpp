// A fuzz target without libFuzzer, for the main build and CI (ctest
// fuzz_replay_dicom, fuzz_replay_nifti): every file of the folders given (the
// seed corpus, and any regression input added there), then deterministic
// broken variants of each -- cut short at 16 lengths, and 64 copies with 1 to 8
// bytes replaced, drawn from a generator seeded by the file's name. A reader
// change that crashes or aborts on broken input, or a target that no longer
// compiles against the readers, then fails the suite instead of waiting for the
// next fuzzing session. The search for new inputs is libFuzzer's (README.md).
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

constexpr int kCuts = 16;
// Variants with replaced bytes per file; COVIDRATE_FUZZ_VARIANTS changes it
// (a longer search by hand, with the same generator).
int mutant_count() {
  const char* text = std::getenv("COVIDRATE_FUZZ_VARIANTS");
  return text ? std::max(0, std::atoi(text)) : 64;
}

// Which input is running, for the message when one crashes: the file, and
// the cut or the replaced bytes (offset=value) that make the variant.
char g_current[4096] = "";

void on_crash(int signal) {
  const char head[] = "\nfuzz replay: crashed on ";
  [[maybe_unused]] ssize_t w = ::write(2, head, sizeof(head) - 1);
  w = ::write(2, g_current, std::strlen(g_current));
  w = ::write(2, "\n", 1);
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}

std::vector<uint8_t> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

uint64_t fnv1a64(const std::string& text) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (const unsigned char c : text) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

// Runs the target on `bytes` and its variants; returns how many inputs ran.
int64_t replay(const std::string& name, const std::vector<uint8_t>& bytes) {
  int64_t inputs = 0;
  const auto run = [&](const std::vector<uint8_t>& input, const char* what) {
    std::snprintf(g_current, sizeof(g_current), "%s, %s (%zu bytes)", name.c_str(), what, input.size());
    LLVMFuzzerTestOneInput(input.data(), input.size());
    ++inputs;
  };
  run(bytes, "as it is");
  for (int k = 1; k <= kCuts; ++k) {
    const size_t length = bytes.size() * k / (kCuts + 1);
    char what[64];
    std::snprintf(what, sizeof(what), "cut to %zu bytes", length);
    run(std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(length)), what);
  }
  if (bytes.empty()) return inputs;
  std::mt19937_64 rng(fnv1a64(name));
  const int mutants = mutant_count();
  for (int m = 0; m < mutants; ++m) {
    std::vector<uint8_t> mutant = bytes;
    const int changes = 1 + static_cast<int>(rng() % 8);
    char what[1024];
    int used = std::snprintf(what, sizeof(what), "variant %d, bytes", m);
    for (int c = 0; c < changes; ++c) {
      const auto value = static_cast<uint8_t>(rng());
      const size_t at = rng() % mutant.size();
      mutant[at] = value;
      used += std::snprintf(what + used, sizeof(what) - static_cast<size_t>(used), " %zu=%u", at, unsigned{value});
    }
    run(mutant, what);
  }
  return inputs;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FOLDER|FILE...\n", argv[0]);
    return 2;
  }
  std::vector<std::filesystem::path> files;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path p = argv[i];
    if (std::filesystem::is_directory(p)) {
      for (const auto& entry : std::filesystem::directory_iterator(p))
        if (entry.is_regular_file()) files.push_back(entry.path());
    } else if (std::filesystem::is_regular_file(p)) {
      files.push_back(p);
    } else {
      std::fprintf(stderr, "%s: %s is neither a file nor a folder\n", argv[0], argv[i]);
      return 1;
    }
  }
  if (files.empty()) {
    std::fprintf(stderr, "%s: no input files\n", argv[0]);
    return 1;
  }
  std::sort(files.begin(), files.end());
  for (const int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) std::signal(sig, on_crash);
  int64_t inputs = 0;
  for (const auto& f : files) inputs += replay(f.filename().string(), read_bytes(f));
  std::printf("%s: %lld inputs from %zu files, none crashed\n", argv[0], static_cast<long long>(inputs), files.size());
  return 0;
}
