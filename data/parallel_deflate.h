// Deflate on several threads, for the files `segment` writes: gzip (.nii.gz)
// and zlib streams (the IDAT of a PNG). The idea is pigz's (Mark Adler): the
// data is cut into blocks of kDeflateBlockBytes at fixed offsets; each block is
// deflated on its own, primed with the 32 KiB before it as dictionary (so
// matches still reach back across a cut), and ends on a byte boundary with a
// sync flush, so the blocks' pieces laid end to end are ONE valid deflate
// stream; the last piece ends with a final block. Checksums are computed per
// block and combined (crc32_combine, adler32_combine).
//
// Why: writing a study's volumes and pictures was serial zlib, 0.19 s for a
// 255-slice lesion mask, 0.7 s for a probability map and 0.3 s for the montage
// PNG on this machine; on a GPU machine those are most of what `segment` waits
// for after the network.
//
// The bytes do not depend on the number of threads, so the same input gives the
// same file on any machine, and any reader reads it (zlib's gzread, Python's
// gzip, libpng, ITK-SNAP, 3D Slicer).
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace covidrate::data {

inline constexpr size_t kDeflateBlockBytes = size_t{256} << 10;

// A zlib stream (RFC 1950) of data[0, n) at compression `level` (1 fastest ..
// 9 smallest). Empty on a zlib error.
std::vector<unsigned char> zlib_compress(const char* data, size_t n, int level);

// A gzip file (RFC 1952, one member) written as data streams in.
class GzipWriter {
 public:
  static constexpr size_t kGroupBlocks = 32;  // compressed together, then written: 8 MiB in flight

  // Writes to `file` (opened for binary writing, owned by the caller).
  GzipWriter(std::FILE* file, int level);
  GzipWriter(const GzipWriter&) = delete;
  GzipWriter& operator=(const GzipWriter&) = delete;

  // Appends n bytes. False when compressing or writing failed (the file is then
  // incomplete: the caller discards it).
  bool write(const char* data, size_t n);
  // Compresses what is left, ends the deflate stream and writes the trailer.
  bool finish();

 private:
  // Deflates and writes the pending bytes; `last`: they end the stream.
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
