#include "data/gzip_writer.h"

#include <zlib.h>

#include <algorithm>
#include <atomic>

#include "kernels/cpu/threads.h"

namespace covidrate::data {

namespace {

constexpr size_t kWindow = 32768;  // deflate's reach back: the dictionary a block is primed with

void put_le32(std::FILE* f, uint32_t v, bool& ok) {
  const unsigned char b[4] = {static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8),
                              static_cast<unsigned char>(v >> 16), static_cast<unsigned char>(v >> 24)};
  ok = ok && std::fwrite(b, 1, 4, f) == 4;
}

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
    if (z.total_out == out.size()) out.resize(out.size() * 2);  // never expected; deflate says if it needs more
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

}  // namespace

GzipWriter::GzipWriter(std::FILE* file, int level) : file_(file), level_(std::clamp(level, 1, 9)) {
  // ID1 ID2, CM = deflate, no flags, no modification time, XFL (4: fastest,
  // 2: best), OS = Unix (what gzopen writes there).
  const unsigned char header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0,
                                    static_cast<unsigned char>(level_ == 1 ? 4 : level_ == 9 ? 2 : 0), 3};
  ok_ = file_ && std::fwrite(header, 1, sizeof header, file_) == sizeof header;
  pending_.reserve(kBlockBytes * kGroupBlocks);
}

bool GzipWriter::write(const char* data, size_t n) {
  while (ok_ && n > 0) {
    const size_t room = kBlockBytes * kGroupBlocks - pending_.size();
    const size_t take = std::min(room, n);
    pending_.insert(pending_.end(), data, data + take);
    data += take, n -= take;
    // A full group is compressed only once more data shows it is not the end
    // (the stream's last block must be the final one).
    if (n > 0 && pending_.size() == kBlockBytes * kGroupBlocks) ok_ = compress_pending(false);
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
  const size_t n = pending_.size();
  const size_t blocks = std::max<size_t>(1, (n + kBlockBytes - 1) / kBlockBytes);  // an empty end: one empty final block
  std::vector<std::vector<unsigned char>> out(blocks);
  std::vector<uint32_t> crc(blocks);
  std::atomic<bool> failed{false};
  cpu::parallel_for(static_cast<int64_t>(blocks), 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const size_t begin = static_cast<size_t>(b) * kBlockBytes, len = std::min(kBlockBytes, n - begin);
      const char* data = pending_.data() + begin;
      // The 32 KiB before the block: from the previous group for the first.
      const char* dictionary = b == 0 ? dictionary_.data() : data - kWindow;
      const size_t dictionary_bytes = b == 0 ? dictionary_.size() : kWindow;
      const bool final_block = last && static_cast<size_t>(b) + 1 == blocks;
      if (!deflate_block(data, len, dictionary, dictionary_bytes, level_, final_block, out[b])) failed = true;
      crc[b] = static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(data), static_cast<uInt>(len)));
    }
  });
  if (failed) return false;
  for (size_t b = 0; b < blocks; ++b) {
    const size_t len = std::min(kBlockBytes, n - std::min(n, b * kBlockBytes));
    crc_ = static_cast<uint32_t>(crc32_combine(crc_, crc[b], static_cast<z_off_t>(len)));
    if (std::fwrite(out[b].data(), 1, out[b].size(), file_) != out[b].size()) return false;
  }
  total_ += n;
  // The next group's first block reaches back into this one.
  if (n >= kWindow) {
    dictionary_.assign(pending_.end() - kWindow, pending_.end());
  } else {
    dictionary_.insert(dictionary_.end(), pending_.begin(), pending_.end());
    if (dictionary_.size() > kWindow) dictionary_.erase(dictionary_.begin(), dictionary_.end() - kWindow);
  }
  pending_.clear();
  return true;
}

}  // namespace covidrate::data
