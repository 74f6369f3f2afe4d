#include "nn/text_file.h"

#include <filesystem>
#include <fstream>

#include "nn/error.h"

namespace covidrate {

void write_text_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    CR_CHECK(out, "cannot write " << tmp);
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace covidrate
