// Element-by-element walk of a DICOM stream (PS3.5 section 7): every length must
// fit in what is left of the file, every undefined-length sequence and item
// must be closed, nesting stays shallow.
#include "data/dicom_structure.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <optional>
#include <string>

#include "nn/error.h"

namespace covidrate::data::dicom {
namespace {

constexpr uint32_t kUndefinedLength = 0xffffffff;
constexpr int kMaxDepth = 32;  // real data nests a few levels; deeper is malformed

constexpr uint32_t tag(uint16_t group, uint16_t element) { return uint32_t(group) << 16 | element; }
constexpr uint32_t kItem = tag(0xfffe, 0xe000);
constexpr uint32_t kItemEnd = tag(0xfffe, 0xe00d);
constexpr uint32_t kSequenceEnd = tag(0xfffe, 0xe0dd);
constexpr uint32_t kPixelData = tag(0x7fe0, 0x0010);
constexpr uint32_t kRecognitionCode = tag(0x0008, 0x0010);  // retired, ACR-NEMA's

enum class Encoding { ImplicitLittle, ExplicitLittle, ExplicitBig };

class Walker {
 public:
  Walker(const std::string& file, std::string_view bytes)
      : file_(file), data_(reinterpret_cast<const unsigned char*>(bytes.data())), size_(bytes.size()) {}

  // Walks elements from `pos` until `end`, or until `stop_tag` when end is
  // unknown (undefined-length item). Returns the position after the last element.
  size_t elements(size_t pos, size_t end, Encoding enc, int depth, uint32_t stop_tag = 0) {
    CR_CHECK(depth <= kMaxDepth, file_ << ": sequences nested deeper than " << kMaxDepth << " levels");
    while (pos < end) {
      // Some writers pad the end of the file with zero bytes.
      if (depth == 0 && std::all_of(data_ + pos, data_ + end, [](unsigned char b) { return b == 0; })) return pos;
      const uint32_t t = read_tag(pos, enc);
      if (stop_tag && t == stop_tag) {
        delimiter(pos, enc);
        return pos + 8;
      }
      pos = element(pos, enc, depth, t);
    }
    CR_CHECK(!stop_tag, file_ << ": truncated: an item of undefined length is not closed");
    CR_CHECK(pos == end, file_ << ": an element overruns its enclosing item");
    return end;
  }

  // The meta header: explicit VR little endian elements of group 0002.
  // Returns the position of the data set and sets the transfer syntax.
  size_t meta(size_t pos, std::string& transfer_syntax) {
    std::optional<size_t> announced_end;  // from the group length (0002,0000), which GDCM trusts
    while (pos + 8 <= size_ && u16(pos, Encoding::ExplicitLittle) == 0x0002) {
      const uint32_t t = read_tag(pos, Encoding::ExplicitLittle);
      const size_t start = pos;
      pos = element(pos, Encoding::ExplicitLittle, 0, t);
      if (t == tag(0x0002, 0x0000) && pos - start == 12) announced_end = pos + u32(start + 8, Encoding::ExplicitLittle);
      if (t == tag(0x0002, 0x0010)) {
        CR_CHECK(data_[start + 4] == 'U' && data_[start + 5] == 'I',
                 file_ << ": the transfer syntax element is not a UID (UI)");
        const size_t header = 8;
        std::string uid(reinterpret_cast<const char*>(data_ + start + header), pos - start - header);
        while (!uid.empty() && (uid.back() == '\0' || uid.back() == ' ')) uid.pop_back();
        transfer_syntax = uid;
      }
    }
    // A meta header whose elements disagree with its group length aborts
    // inside GDCM (found by fuzz_dicom).
    CR_CHECK(!announced_end || *announced_end == pos,
             file_ << ": the meta header's group length says it ends at byte " << *announced_end
                   << ", its elements end at byte " << pos);
    return pos;
  }

  size_t size() const { return size_; }
  std::vector<std::pair<size_t, size_t>>& pixel_fragments() { return fragments_; }
  const unsigned char* data() const { return data_; }

 private:
  void need(size_t pos, uint64_t count, const char* what) const {
    CR_CHECK(pos <= size_ && count <= size_ - pos,
             file_ << ": truncated: " << what << " at byte " << pos << " needs " << count << " bytes, "
                   << (pos <= size_ ? size_ - pos : 0) << " are left");
  }
  uint16_t u16(size_t pos, Encoding enc) const {
    need(pos, 2, "a value");
    return enc == Encoding::ExplicitBig ? uint16_t(data_[pos] << 8 | data_[pos + 1])
                                        : uint16_t(data_[pos] | data_[pos + 1] << 8);
  }
  uint32_t u32(size_t pos, Encoding enc) const {
    need(pos, 4, "a value");
    const unsigned char* p = data_ + pos;
    return enc == Encoding::ExplicitBig ? uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]
                                        : uint32_t(p[3]) << 24 | uint32_t(p[2]) << 16 | uint32_t(p[1]) << 8 | p[0];
  }
  // An item or sequence delimiter: its length field must be zero (GDCM reads
  // a non-zero one as the size of a fragment to allocate; found by fuzz_dicom).
  void delimiter(size_t pos, Encoding enc) const {
    CR_CHECK(u32(pos + 4, enc) == 0, file_ << ": a delimiter with a non-zero length at byte " << pos);
  }
  uint32_t read_tag(size_t pos, Encoding enc) const {
    // Item and delimiter tags use the data set's byte order too.
    return tag(u16(pos, enc), u16(pos + 2, enc));
  }

  // One element starting at `pos` (its tag already read as `t`); returns the
  // position after it.
  size_t element(size_t pos, Encoding enc, int depth, uint32_t t) {
    CR_CHECK(t != kItem && t != kItemEnd && t != kSequenceEnd,
             file_ << ": an item or delimiter tag outside a sequence at byte " << pos);
    need(pos, 8, "an element header");
    uint32_t length;
    size_t value;
    bool sequence = false;
    bool implicit_sequence = false;  // UN holding a sequence: always implicit VR (PS3.5 6.2.2)
    bool may_be_encapsulated = true;  // explicit VR: only OB, OW or UN pixel data (GDCM asserts so)
    if (enc == Encoding::ImplicitLittle) {
      length = u32(pos + 4, enc);
      value = pos + 8;
      // Without VRs, a sequence shows itself by an undefined length or by a
      // value that starts with an item; GDCM knows sequences from its
      // dictionary and parses them either way, so they are walked too.
      sequence = t != kPixelData && (length == kUndefinedLength ||
                                     (length >= 8 && value + 4 <= size_ && read_tag(value, enc) == kItem));
    } else {
      const char vr[2] = {static_cast<char>(data_[pos + 4]), static_cast<char>(data_[pos + 5])};
      const auto is_one_of = [&](std::initializer_list<const char*> list) {
        for (const char* l : list)
          if (vr[0] == l[0] && vr[1] == l[1]) return true;
        return false;
      };
      // VRs with a 4-byte length, then those with a 2-byte length (PS3.5 7.1.2).
      // GDCM asserts on any other pair of letters (found by fuzz_dicom).
      const bool is_long = is_one_of({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"});
      CR_CHECK(is_long || is_one_of({"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "PN",
                                     "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"}),
               file_ << ": invalid value representation '" << std::string(vr, 2) << "' at byte " << pos + 4);
      if (is_long) {
        need(pos, 12, "an element header");
        length = u32(pos + 8, enc);
        value = pos + 12;
      } else {
        length = u16(pos + 6, enc);
        value = pos + 8;
      }
      sequence = vr[0] == 'S' && vr[1] == 'Q';
      may_be_encapsulated = is_one_of({"OB", "OW", "UN"});
      implicit_sequence = vr[0] == 'U' && vr[1] == 'N' && length == kUndefinedLength && t != kPixelData;
    }
    if (implicit_sequence) return items(value, length, Encoding::ImplicitLittle, depth);
    if (sequence) return items(value, length, enc, depth);
    if (length == kUndefinedLength) {
      CR_CHECK(t == kPixelData && may_be_encapsulated,
               file_ << ": undefined length on an element that is neither a sequence nor OB/OW pixel data, at byte "
                     << pos);
      return fragments(value, enc, depth);
    }
    need(value, length, "an element's value");
    if (depth == 0 && t == kRecognitionCode) recognition_code(value, length);
    return value + length;
  }

  // GDCM takes a data set holding (0008,0010) for an ACR-NEMA file and asserts
  // that the value names one (found by the fuzz replay, fuzz/replay_main.cpp).
  void recognition_code(size_t value, uint32_t length) const {
    const std::string code(reinterpret_cast<const char*>(data_ + value), length);
    bool known = false;
    for (const char* prefix : {"ACR-NEMA", "ACRNEMA", "MIPS 2.0"})
      known = known || code.compare(0, std::strlen(prefix), prefix) == 0;
    CR_CHECK(known, file_ << ": (0008,0010) Recognition Code holds '" << code
                          << "', which names no ACR-NEMA version (a damaged element)");
  }

  // The items of a sequence, defined length or closed by a sequence delimiter.
  size_t items(size_t pos, uint32_t length, Encoding enc, int depth) {
    const bool defined = length != kUndefinedLength;
    if (defined) need(pos, length, "a sequence");
    const size_t end = defined ? pos + length : size_;
    while (pos < end) {
      const uint32_t t = read_tag(pos, enc);
      if (!defined && t == kSequenceEnd) {
        delimiter(pos, enc);
        return pos + 8;
      }
      CR_CHECK(t == kItem, file_ << ": expected an item inside a sequence at byte " << pos);
      const uint32_t item_length = u32(pos + 4, enc);
      pos += 8;
      if (item_length == kUndefinedLength) {
        pos = elements(pos, end, enc, depth + 1, kItemEnd);
      } else {
        need(pos, item_length, "an item");
        pos = elements(pos, pos + item_length, enc, depth + 1);
      }
    }
    CR_CHECK(defined, file_ << ": truncated: a sequence of undefined length is not closed");
    CR_CHECK(pos == end, file_ << ": an item overruns its sequence");
    return pos;
  }

  // Encapsulated (compressed) pixel data: an offset table and fragments, each
  // an item of defined length, closed by a sequence delimiter.
  size_t fragments(size_t pos, Encoding enc, int depth) {
    for (bool offset_table = true;; offset_table = false) {
      const uint32_t t = read_tag(pos, enc);
      if (t == kSequenceEnd) {
        delimiter(pos, enc);
        return pos + 8;
      }
      const uint32_t length = u32(pos + 4, enc);
      pos += 8;
      CR_CHECK(t == kItem && length != kUndefinedLength,
               file_ << ": malformed encapsulated pixel data at byte " << pos - 8);
      need(pos, length, "a pixel data fragment");
      if (depth == 0 && !offset_table) fragments_.emplace_back(pos, length);
      pos += length;
    }
  }

  std::string file_;
  const unsigned char* data_;
  size_t size_;
  std::vector<std::pair<size_t, size_t>> fragments_;
};

}  // namespace

Structure check_structure(const std::string& file, std::string_view bytes) {
  Walker walker(file, bytes);
  size_t pos = 0;
  std::string transfer_syntax;
  // GDCM guesses the byte order of a stream without a transfer syntax from its
  // first tag, and may guess otherwise than this walk (a 2 GiB "length" came
  // out of one such file; found by fuzz_dicom). So a meta header must name its
  // transfer syntax, and a bare data set must start with group 0008 in little
  // endian, where both agree.
  bool meta = false;
  if (bytes.size() >= 132 && std::memcmp(bytes.data() + 128, "DICM", 4) == 0) {
    pos = walker.meta(132, transfer_syntax);
    meta = true;
  } else {
    CR_CHECK(bytes.size() >= 8, file << ": too short for DICOM (" << bytes.size() << " bytes)");
    meta = bytes[0] == 0x02 && bytes[1] == 0x00;
    if (meta) pos = walker.meta(0, transfer_syntax);  // meta header without the preamble
    else CR_CHECK(bytes[0] == 0x08 && bytes[1] == 0x00, file << ": does not start like a DICOM data set");
  }
  CR_CHECK(!meta || !transfer_syntax.empty(), file << ": the meta header names no transfer syntax");
  // Only syntaxes GDCM decodes here; for any other it would guess the encoding.
  static const char* const supported[] = {
      "1.2.840.10008.1.2",      "1.2.840.10008.1.2.1",    "1.2.840.10008.1.2.2",    // uncompressed
      "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",  // JPEG
      "1.2.840.10008.1.2.4.70",                                                      // JPEG Lossless SV1
      "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",                            // JPEG-LS
      "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",                            // JPEG 2000
      "1.2.840.10008.1.2.5",                                                         // RLE
  };
  CR_CHECK(!meta || std::find(std::begin(supported), std::end(supported), transfer_syntax) != std::end(supported),
           file << ": transfer syntax " << transfer_syntax
                << " is not supported (uncompressed, JPEG, JPEG Lossless, JPEG-LS, JPEG 2000 or RLE)");
  CR_CHECK(transfer_syntax != "1.2.840.10008.1.2.1.99",
           file << ": the deflated transfer syntax is not supported; decompress it first (e.g. gdcmconv --raw)");
  Encoding enc = Encoding::ExplicitLittle;
  if (transfer_syntax == "1.2.840.10008.1.2") enc = Encoding::ImplicitLittle;
  else if (transfer_syntax == "1.2.840.10008.1.2.2") enc = Encoding::ExplicitBig;
  else if (transfer_syntax.empty()) {
    // No meta header: implicit VR little endian unless a VR follows the first tag.
    const unsigned char* p = walker.data() + pos;
    const bool vr_like = pos + 6 <= walker.size() && p[4] >= 'A' && p[4] <= 'Z' && p[5] >= 'A' && p[5] <= 'Z';
    enc = vr_like ? Encoding::ExplicitLittle : Encoding::ImplicitLittle;
  }
  CR_CHECK(pos < walker.size(), file << ": truncated: no data set after the meta header");
  const size_t end = walker.elements(pos, walker.size(), enc, 0);
  CR_CHECK(end > pos, file << ": no data set after the meta header");
  return {transfer_syntax, end, std::move(walker.pixel_fragments())};
}

}  // namespace covidrate::data::dicom
