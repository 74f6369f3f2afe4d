// A structural check of a DICOM file before GDCM parses it. Debian's GDCM is
// built with assertions on, and a truncated or malformed stream trips them:
// abort(), not an error. So every file is first walked element by element
// here -- tags, lengths, sequences, items, pixel-data fragments -- checking that
// each length stays inside the file, and only a file that walks cleanly is
// handed to GDCM. Internal to the DICOM reader.
#pragma once
#include <string>
#include <string_view>

namespace covidrate::data::dicom {

// Throws covidrate::Error naming `file` when `bytes` is not a complete DICOM
// stream (Part 10 with preamble, or a bare data set in implicit/explicit VR
// little endian). Returns the transfer syntax UID ("" when there is no meta
// header, i.e. implicit VR little endian).
std::string check_structure(const std::string& file, std::string_view bytes);

}  // namespace covidrate::data::dicom
