// NIfTI-1 / NIfTI-2 reader and writer (.nii, .nii.gz), without libnifti.
//
// NIfTI world coordinates are RAS+ (x grows towards the patient's Right, y towards
// Anterior, z towards Superior); covidrate keeps DICOM's LPS+ (Left, Posterior,
// Superior), so the x and y world coordinates flip sign on the way in and back on
// the way out. A mask written from a Volume read here overlays its input in
// ITK-SNAP or 3D Slicer.
#pragma once
#include <string>

#include "data/volume.h"

namespace covidrate::data {

// Reads a .nii or .nii.gz file, NIfTI-1 or NIfTI-2, either byte order. Voxel
// values have scl_slope/scl_inter applied. Datatypes: uint8, int8, int16, uint16,
// int32, uint32, float32, float64. Geometry comes from the sform when set, else
// the qform, else the pixel dimensions alone. A 4-D file (nt > 1) yields its
// first volume; `description` and `volumes_in_file` say so. NaN or infinite
// voxels are an Error. The intensity kind is a guess: integer files whose
// values are all small non-negative integers are Label, others HU.
Volume read_nifti(const std::string& path);

// Voxel type of a written file.
enum class NiftiType { UInt8, Int16, Float32 };

// Writes `v` as NIfTI-1 (single .nii file; gzip-compressed if `path` ends with
// .gz) with both qform and sform set from v's geometry -- or, when v is on the
// grid of a NIfTI file it was read from or copied from (VolumeGrid::nifti_source),
// with that file's qform, sform, their codes and pixdim as they were, so that
// a mask overlays its image whichever of the two a viewer reads. Values are rounded and
// clamped to the range of `type` for integer types. The file appears atomically
// (written to a temporary name beside it, then renamed).
void write_nifti(const std::string& path, const Volume& v, NiftiType type);
// A label volume, its bytes as they are (UInt8) or widened.
void write_nifti(const std::string& path, const LabelVolume& v, NiftiType type = NiftiType::UInt8);

// True if `path` ends with .nii or .nii.gz (case-insensitive).
bool has_nifti_extension(const std::string& path);

}  // namespace covidrate::data
