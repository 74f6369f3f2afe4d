#include "data/parallel_deflate.h"

#include <zlib.h>

#include <algorithm>
#include <atomic>

#include "kernels/cpu/threads.h"

namespace covidrate::data {

namespace {

constexpr size_t kWindow = 32768;  // deflate's reach back: the dictionary a block is primed with

// One block deflated as a piece of a raw deflate stream: primed with
// `dictionary`, ended by a sync flush (byte-aligned, not final) or, for the
// stream's last block, by a final block. False on a zlib error.
bool deflate_block(const char* data, size_t n, const char* dictionary, size_t dictionary_bytes, int level,
                   bool final_block, std::vector<unsigned char>& out) {
  z_stream z{};
  if (deflateInit2(&z, level, Z_DEFLATED, -15 /* raw: no zlib header */, 8, Z_DEFAULT_STRATEGY) != Z_OK) return false;
  bool ok = dictionary_bytes == 0 ||
            deflateSetDictionary(&z, reinterpret_cast<const Bytef*>(dictionary), static_cast<uInt>(dictionary_bytes)) ==
                Z_OK;
  // deflateBound covers the data and a final block; a sync flush adds at most
  // an empty stored block (5 bytes) and a few bits.
  out.resize(deflateBound(&z, static_cast<uLong>(n)) + 16);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data));
  z.avail_in = static_cast<uInt>(n);
  const int flush = final_block ? Z_FINISH : Z_SYNC_FLUSH;
  while (ok) {
    if (z.total_out == out.size()) out.resize(out.size() * 2);  // not expected: the bound holds
    z.next_out = out.data() + z.total_out;
    z.avail_out = static_cast<uInt>(out.size() - z.total_out);
    const int ret = deflate(&z, flush);
    if (final_block ? ret == Z_STREAM_END : (ret == Z_OK && z.avail_in == 0 && z.avail_out > 0)) break;
    ok = ret == Z_OK;  // Z_OK short of the end: it filled the output, which grows on the next turn
  }
  out.resize(z.total_out);
  deflateEnd(&z);
  return ok;
}

// The checksum a format carries: gzip's CRC-32 or zlib's Adler-32.
enum class Checksum { Crc32, Adler32 };

// What deflate_blocks makes of one span: the pieces of the deflate stream and
// each block's checksum and length (what crc32_combine / adler32_combine need).
struct Blocks {
  std::vector<std::vector<unsigned char>> pieces;
  std::vector<uint32_t> check;
  std::vector<size_t> length;
};

// data[0, n) in blocks of kDeflateBlockBytes on all threads; the first block is
// primed with `dictionary`; `last`: the span ends the stream (an empty span then
// still makes one piece, the final empty block). False on a zlib error.
bool deflate_blocks(const char* data, size_t n, const std::vector<char>& dictionary, int level, bool last,
                    Checksum checksum, Blocks& b) {
  const size_t count = std::max<size_t>(1, (n + kDeflateBlockBytes - 1) / kDeflateBlockBytes);
  b.pieces.assign(count, {});
  b.check.assign(count, 0);
  b.length.assign(count, 0);
  std::atomic<bool> failed{false};
  cpu::parallel_for(static_cast<int64_t>(count), 1, [&](int64_t k0, int64_t k1) {
    for (size_t k = static_cast<size_t>(k0); k < static_cast<size_t>(k1); ++k) {
      const size_t begin = std::min(n, k * kDeflateBlockBytes), len = std::min(kDeflateBlockBytes, n - begin);
      const char* block = data + begin;
      // The 32 KiB before the block (kDeflateBlockBytes > kWindow): the given
      // dictionary before the first.
      const char* before = k == 0 ? dictionary.data() : block - kWindow;
      const size_t before_bytes = k == 0 ? dictionary.size() : kWindow;
      if (!deflate_block(block, len, before, before_bytes, level, last && k + 1 == count, b.pieces[k]))
        failed = true;
      const auto* bytes = reinterpret_cast<const Bytef*>(block);
      b.check[k] = static_cast<uint32_t>(checksum == Checksum::Crc32 ? crc32(0L, bytes, static_cast<uInt>(len))
                                                                      : adler32(1L, bytes, static_cast<uInt>(len)));
      b.length[k] = len;
    }
  });
  return !failed;
}

void put_le32(std::FILE* f, uint32_t v, bool& ok) {
  const unsigned char b[4] = {static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8),
                              static_cast<unsigned char>(v >> 16), static_cast<unsigned char>(v >> 24)};
  ok = ok && std::fwrite(b, 1, 4, f) == 4;
}

}  // namespace

std::vector<unsigned char> zlib_compress(const char* data, size_t n, int level) {
  level = std::clamp(level, 1, 9);
  Blocks b;
  if (!deflate_blocks(data, n, {}, level, /*last=*/true, Checksum::Adler32, b)) return {};
  // CMF: deflate, 32 KiB window; FLG: the level class, and check bits that make
  // CMF * 256 + FLG a multiple of 31.
  const unsigned cmf = 0x78, level_class = level == 1 ? 0 : level < 6 ? 1 : level == 6 ? 2 : 3;
  unsigned flg = level_class << 6;
  flg += (31 - (cmf * 256 + flg) % 31) % 31;
  std::vector<unsigned char> out = {static_cast<unsigned char>(cmf), static_cast<unsigned char>(flg)};
  uint32_t adler = 1;
  for (size_t k = 0; k < b.pieces.size(); ++k) {
    out.insert(out.end(), b.pieces[k].begin(), b.pieces[k].end());
    adler = static_cast<uint32_t>(adler32_combine(adler, b.check[k], static_cast<z_off_t>(b.length[k])));
  }
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<unsigned char>(adler >> shift));  // big-endian
  return out;
}

GzipWriter::GzipWriter(std::FILE* file, int level) : file_(file), level_(std::clamp(level, 1, 9)) {
  // ID1 ID2, CM = deflate, no flags, no modification time, XFL (4: fastest,
  // 2: best), OS = Unix (what gzopen writes there).
  const unsigned char header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0,
                                    static_cast<unsigned char>(level_ == 1 ? 4 : level_ == 9 ? 2 : 0), 3};
  ok_ = file_ && std::fwrite(header, 1, sizeof header, file_) == sizeof header;
  pending_.reserve(kDeflateBlockBytes * kGroupBlocks);
}

bool GzipWriter::write(const char* data, size_t n) {
  while (ok_ && n > 0) {
    const size_t room = kDeflateBlockBytes * kGroupBlocks - pending_.size();
    const size_t take = std::min(room, n);
    pending_.insert(pending_.end(), data, data + take);
    data += take, n -= take;
    // A full group is compressed only once more data shows it is not the end
    // (the stream's last block must be the final one).
    if (n > 0 && pending_.size() == kDeflateBlockBytes * kGroupBlocks) ok_ = compress_pending(false);
  }
  return ok_;
}

bool GzipWriter::finish() {
  if (ok_) ok_ = compress_pending(true);
  put_le32(file_, crc_, ok_);
  put_le32(file_, static_cast<uint32_t>(total_), ok_);  // ISIZE: the length modulo 2^32
  return ok_;
}

bool GzipWriter::compress_pending(bool last) {
  Blocks b;
  if (!deflate_blocks(pending_.data(), pending_.size(), dictionary_, level_, last, Checksum::Crc32, b)) return false;
  for (size_t k = 0; k < b.pieces.size(); ++k) {
    crc_ = static_cast<uint32_t>(crc32_combine(crc_, b.check[k], static_cast<z_off_t>(b.length[k])));
    if (std::fwrite(b.pieces[k].data(), 1, b.pieces[k].size(), file_) != b.pieces[k].size()) return false;
  }
  total_ += pending_.size();
  // The next group's first block reaches back into this one.
  if (pending_.size() >= kWindow) {
    dictionary_.assign(pending_.end() - kWindow, pending_.end());
  } else {  // only at the end, where nothing follows; kept exact all the same
    dictionary_.insert(dictionary_.end(), pending_.begin(), pending_.end());
    if (dictionary_.size() > kWindow) dictionary_.erase(dictionary_.begin(), dictionary_.end() - kWindow);
  }
  pending_.clear();
  return true;
}

}  // namespace covidrate::data
