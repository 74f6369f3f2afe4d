// A gzip file (RFC 1952, one member) whose deflate stream is compressed on
// several threads: the idea of pigz (Mark Adler). The data is cut into blocks
// of kBlockBytes; each block is deflated on its own, primed with the 32 KiB
// before it as dictionary (so matches still reach back across a cut), and ends
// on a byte boundary with a sync flush, so the blocks' streams laid end to end
// are one valid deflate stream; the last one ends with a final block. The CRC
// of the whole is combined from the blocks' (crc32_combine).
//
// Why: writing a study's volumes is serial gzip otherwise, 0.19 s for a
// 255-slice lesion mask and 0.7 s for a probability map on this machine, and on
// a GPU machine those were most of what `segment` waited for after the network.
//
// The bytes written do not depend on the number of threads (blocks are cut at
// fixed offsets), so the same volume gives the same file on any machine.
// Any gzip reader reads it: zlib's gzread, Python's gzip, ITK-SNAP, 3D Slicer.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace covidrate::data {

class GzipWriter {
 public:
  static constexpr size_t kBlockBytes = size_t{256} << 10;
  static constexpr size_t kGroupBlocks = 32;  // compressed together, then written: 8 MiB in flight

  // Writes to `file` (opened for binary writing, owned by the caller) at
  // compression `level` (1 fastest .. 9 smallest).
  GzipWriter(std::FILE* file, int level);
  GzipWriter(const GzipWriter&) = delete;
  GzipWriter& operator=(const GzipWriter&) = delete;

  // Appends n bytes. False when compressing or writing failed (the file is then
  // incomplete: the caller discards it).
  bool write(const char* data, size_t n);
  // Compresses what is left, ends the deflate stream and writes the trailer.
  bool finish();

 private:
  // Deflates the pending bytes as blocks of kBlockBytes (the last one possibly
  // shorter), `last`: the final block of the stream ends the pending data.
  bool compress_pending(bool last);

  std::FILE* file_;
  int level_;
  bool ok_ = true;
  std::vector<char> pending_;     // not yet compressed, at most kGroupBlocks blocks
  std::vector<char> dictionary_;  // the last 32 KiB before pending_
  uint32_t crc_ = 0;
  uint64_t total_ = 0;  // bytes written in, for the trailer's ISIZE
};

}  // namespace covidrate::data
