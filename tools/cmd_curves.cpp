// covidrate curves LOG.jsonl [--out FILE.svg]
//
// Draws a training run's curves (model/training_curves.h) from its log: the
// picture `train` keeps in OUT/curves.svg, redrawn for a log from elsewhere
// (another machine's run, the shipped weights' weights/*.log.jsonl).
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "model/trainer.h"
#include "model/training_curves.h"
#include "tools/cli.h"

namespace covidrate::tools {
namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: covidrate curves LOG.jsonl [--out FILE.svg]\n\n"
               "Draws the training and validation loss and the validation Dice per epoch of a\n"
               "training log (the log.jsonl that `covidrate train` writes), the best epoch (lowest\n"
               "validation loss) marked, as an SVG picture. Default output: the log's name with\n"
               ".svg instead of .jsonl. Written atomically; an existing file is replaced, except the\n"
               "log itself (--out LOG, or a log named *.svg without --out), which is refused.\n");
}

// Whether writing `out` would replace the log: the same file (a link, a hard
// link, another spelling) when both exist, else the same normalized path.
bool is_the_log(const std::string& log, const std::string& out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(log, ec) && fs::exists(out, ec)) return fs::equivalent(log, out, ec) && !ec;
  const auto normal = [](const std::string& p) {
    std::error_code e;
    fs::path n = fs::absolute(p, e);
    const fs::path resolved = fs::weakly_canonical(n, e);  // links in the folders above
    if (!e) n = resolved;
    return n.lexically_normal();
  };
  return normal(log) == normal(out);
}

}  // namespace

int cmd_curves(int argc, char** argv) {
  std::string log, out;
  ArgScanner args(argc, argv);
  while (args.next()) {
    if (args.help()) return usage(stdout), 0;
    if (args.is("--out")) out = args.value();
    else if (log.empty()) log = args.positional();
    else args.unknown();
  }
  CR_USAGE_CHECK(!log.empty(), "a LOG.jsonl is required");
  CR_CHECK(std::filesystem::is_regular_file(log), "curves: " << log << " is not a file");
  if (out.empty()) out = std::filesystem::path(log).replace_extension(".svg").string();
  CR_CHECK(!is_the_log(log, out), "curves: the picture would replace the log " << log << " (" << out
                                  << "); give --out another file, e.g. "
                                  << std::filesystem::path(log).replace_extension(".curves.svg").string());
  const std::vector<EpochRecord> epochs = read_training_log(log);
  CR_CHECK(!epochs.empty(), "curves: " << log << " holds no epoch");
  const int best = best_epoch_of(epochs);
  save_training_curves(out, epochs, best);
  std::printf("%s: %zu epochs, best %d -> %s\n", log.c_str(), epochs.size(), best, out.c_str());
  return 0;
}

}  // namespace covidrate::tools
