// One entry point for every input kind covidrate accepts.
#pragma once
#include <string>
#include <vector>

#include "data/volume.h"

namespace covidrate::data {

// What a path holds, judged from its first bytes, then its name.
enum class InputKind {
  DicomSeries,  // a folder, a file with the DICOM magic, or *.dcm
  Nifti,        // *.nii, *.nii.gz, or a NIfTI-1/2 header
  Picture,      // PNG or JPG signature
  Unknown       // none of these (may still be DICOM without its preamble)
};
InputKind input_kind(const std::string& path);
const char* to_string(InputKind kind);

// Reads `path` by content, falling back to its extension:
//  - a folder: a DICOM series (searched recursively);
//  - a file starting with the DICOM magic, or named *.dcm: one DICOM file;
//  - *.nii, *.nii.gz (or a NIfTI-1/2 header): NIfTI;
//  - a PNG or JPEG signature: a one-slice picture.
// Throws covidrate::Error naming the path when it is none of these.
Volume read_any(const std::string& path);

// Pictures written back under their file stem (masks/<stem>.png) must not share
// one: "0.jpg" and "0.png" would write one mask over the other. Throws
// covidrate::Error naming both, prefixed with `command` ("segment").
void check_distinct_stems(const std::vector<std::string>& pictures, const std::string& command);

}  // namespace covidrate::data
