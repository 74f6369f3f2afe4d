// DICOM reader: one CT (or MR) series into a Volume in Hounsfield units.
#pragma once
#include <string>

#include "data/volume.h"

namespace covidrate::data {

// Reads a DICOM series from `path`: a folder (searched recursively, linked
// folders followed; macOS "._" files passed over) or a single file. When the
// folder holds several series, the one taken is a CT series that can be placed
// as a volume of grey values (not screen captures), made at the scan rather
// than derived from it (not a MIP or a reformat), with the most slices, and
// among equals one whose description or kernel says LUNG; `description` says
// which one and why, and a warning names the other CT series. Within the
// series, an image sent twice and scout (localizer) images are left out, with
// a warning, and so, with a warning, are files beside it that look like DICOM
// cut short (empty, a bare preamble). An enhanced multi-frame CT and a CT
// slice of unsigned values without RescaleIntercept are refused (ranked last
// among series, so only when nothing else can be read). A gantry-tilted series
// keeps its sheared grid, with a warning.
//
// Voxels are raw * RescaleSlope + RescaleIntercept; slices are sorted by their
// position along the slice normal and spacing[2] comes from those positions (not
// SliceThickness). Padding outside the scanner's field of view (PixelPaddingValue,
// -2000, -3024) becomes -1024 HU (air). Compressed transfer syntaxes (JPEG
// Lossless, JPEG-LS, JPEG 2000, RLE, 12-bit JPEG) decode through GDCM. MR series
// load too; their values are scanner intensities, not HU, and `description` says so.
//
// Throws covidrate::Error naming the file and the cause for an unreadable,
// truncated or inconsistent series (mixed sizes, duplicate positions, missing
// pixel data, unsupported transfer syntax).
Volume read_dicom_series(const std::string& path);

// True if the file starts like DICOM: the "DICM" magic at offset 128, or a
// stream without the preamble (a tag of group 0002 or 0008 first). Cheap.
bool looks_like_dicom_file(const std::string& path);

// Which study the first DICOM image found under `path` (a file or a folder,
// searched as read_dicom_series does) belongs to: its StudyInstanceUID and
// PatientID (some anonymizers give every patient one study UID); empty when
// none of the first 32 files is an image with a study UID. Reads headers only.
std::string dicom_study_key(const std::string& path);

}  // namespace covidrate::data
