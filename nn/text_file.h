// A text file written so that no reader ever sees half of it: the text goes to
// PATH.tmp, which is flushed and then renamed over PATH (a rename within one
// file system is atomic). Used for reports, logs' pictures, splits, summaries.
#pragma once
#include <string>

namespace covidrate {

// Throws covidrate::Error naming the temporary file when it cannot be written.
void write_text_atomically(const std::string& path, const std::string& text);

}  // namespace covidrate
