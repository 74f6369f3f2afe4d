// One DICOM file: its header fields that matter for building a volume, and its
// pixels decoded to rescaled float values. Internal to the DICOM reader
// (data/dicom.cpp assembles files into a series); GDCM does the parsing and the
// decompression.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>

namespace covidrate::data::dicom {

struct FileHeader {
  std::string file;
  std::string series_uid;          // (0020,000E); empty if absent
  std::string study_uid;           // (0020,000D); empty if absent
  std::string patient_id;          // (0010,0020)
  std::string convolution_kernel;  // (0018,1210), e.g. "B70f", "LUNG"
  std::string modality;            // (0008,0060), e.g. "CT", "MR"; empty if absent
  std::string series_description;  // (0008,103E)
  std::string image_type;          // (0008,0008), e.g. "ORIGINAL\\PRIMARY\\AXIAL", "DERIVED\\SECONDARY\\MIP"
  std::string sop_instance_uid;    // (0008,0018): the same image sent twice has the same one
  bool enhanced = false;           // shared functional groups (5200,9229): an enhanced multi-frame image
  std::string transfer_syntax;     // (0002,0010)
  int64_t rows = 0, columns = 0, frames = 1;
  int64_t samples_per_pixel = 1;
  int64_t bits_allocated = 16;
  std::optional<std::array<double, 3>> position;     // ImagePositionPatient, mm, LPS
  std::optional<std::array<double, 6>> orientation;  // ImageOrientationPatient: row dir, column dir
  // PixelSpacing in DICOM order: [0] between rows (along a column), [1] between columns.
  std::array<double, 2> pixel_spacing{1, 1};
  bool has_pixel_spacing = false;
  double slice_spacing = 0;  // SpacingBetweenSlices, else SliceThickness, else 0
  bool has_rescale = false;  // RescaleSlope/Intercept present
  bool has_intercept = false;  // RescaleIntercept present (type 1 in a CT image)
  bool signed_values = false;  // PixelRepresentation 1: stored values may be negative (HU as they are)
  double slope = 1, intercept = 0;
  std::optional<double> padding_value;  // PixelPaddingValue, in stored (raw) units

  // Values are Hounsfield units: a CT, or a file with no modality but a rescale.
  bool is_ct() const { return modality == "CT" || (modality.empty() && has_rescale); }
  // A scout (topogram) sent in the series of the axial slices.
  bool is_localizer() const { return image_type.find("LOCALIZER") != std::string::npos; }
  // Made from other images (a MIP, a reformat, a screen capture: DERIVED\SECONDARY),
  // not reconstructed from the scan. DERIVED\PRIMARY (a thin reconstruction) is not.
  bool is_derived() const {
    return image_type.rfind("DERIVED", 0) == 0 && image_type.find("PRIMARY") == std::string::npos;
  }
  // Readable as a volume of Hounsfield units by this reader: not an enhanced
  // multi-frame CT (its rescale and places are in functional groups), and an
  // unsigned CT image has its RescaleIntercept.
  bool readable() const {
    if (!is_ct()) return true;
    return !enhanced && (modality != "CT" || has_intercept || signed_values);
  }
};

// Reads the header of `file` up to (not including) the pixel data. Returns
// nullopt for files that are not DICOM images (other files, DICOMDIR, reports);
// throws covidrate::Error for a file that claims to be DICOM (the "DICM" magic,
// or a .dcm name) but cannot be parsed, or whose image fields are nonsense.
std::optional<FileHeader> read_header(const std::string& file);

// Geometry GDCM derives for a multi-frame file (origin of the first frame,
// direction cosines, spacing including between frames).
struct FrameGeometry {
  std::array<double, 3> origin{0, 0, 0};
  std::array<double, 6> orientation{1, 0, 0, 0, 1, 0};
  std::array<double, 3> spacing{1, 1, 1};
};

// Decodes the pixel data of `header.file` into `out` (columns * rows * frames
// floats, x fastest) as stored * slope + intercept. For CT, padding and every
// value below -1024 HU become -1024 (air): scanners mark voxels outside the
// reconstructed field of view with -2000 or -3024, which are not tissue. RGB
// pictures become the mean of their three channels, YBR pictures their luma.
// Throws covidrate::Error naming the file when the pixel data is missing,
// truncated, undecodable or disagrees with the header.
FrameGeometry decode_pixels(const FileHeader& header, float* out);

// Why a file that is no DICOM image looks like one cut short: "empty", "N bytes,
// all zero", or "a DICOM preamble without the DICM marker after it" (a copy
// that failed, a full disk); empty for any other file.
std::string cut_short_reason(const std::string& file);

// True if the file has the "DICM" magic at byte 128 (the DICOM Part 10 preamble).
bool has_dicom_magic(const std::string& file);

// True if the file starts as DICOM without the Part 10 preamble (older exports,
// IM0001 files): with a tag of group 0002 (meta header) or 0008
// (identification), element 00xx. False for a file that cannot be opened.
bool starts_like_dicom_stream(const std::string& file);

}  // namespace covidrate::data::dicom
