// A structural check of a DICOM file before GDCM parses it. Debian's GDCM is
// built with assertions on, and a truncated or malformed stream trips them:
// abort(), not an error. So every file is first walked element by element
// here -- tags, lengths, sequences, items, pixel-data fragments -- checking that
// each length stays inside the file, and only a file that walks cleanly is
// handed to GDCM. Internal to the DICOM reader.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace covidrate::data::dicom {

struct Structure {
  std::string transfer_syntax;  // "" when there is no meta header
  // Where the last top-level element ends. Zero bytes may pad a file beyond
  // it; GDCM must not be shown them (six of them trip one of its assertions).
  size_t end = 0;
  // Offset and length of each fragment of the top-level encapsulated pixel
  // data (the basic offset table excluded); empty for uncompressed data.
  std::vector<std::pair<size_t, size_t>> fragments;
};

// Throws covidrate::Error naming `file` when `bytes` is not a complete DICOM
// stream (Part 10 with preamble, or a bare data set in implicit/explicit VR,
// either byte order).
Structure check_structure(const std::string& file, std::string_view bytes);

}  // namespace covidrate::data::dicom
