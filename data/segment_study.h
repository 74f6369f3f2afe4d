// One study through `covidrate segment`: which inputs make a study, and the
// study's output folder (masks, figures, pictures, report), written atomically.
//
// Study folder (docs/segment.md lists every file):
//   lesion_mask.nii.gz  the lesion mask on the input's grid and geometry
//   probability.nii.gz  with save_probability;  lungs.nii.gz with save_lungs
//   masks/<stem>.png    picture input: each picture's mask at its own size
//   report.json, report.html, infection_rate.png, most_affected.png, summary.csv
// Everything is written into DIR.tmp, which becomes DIR only at the end: a DIR
// that exists is always complete.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "data/report.h"
#include "data/segment_pipeline.h"

namespace covidrate::data {

enum class StudyKind { DicomSeries, Nifti, Pictures };
const char* to_string(StudyKind kind);

struct StudyInput {
  std::string name;                // names the output folder in batch mode
  StudyKind kind = StudyKind::DicomSeries;
  std::vector<std::string> paths;  // one folder or file; pictures: one or more files
};

struct InputPlan {
  bool batch = false;  // a folder of studies: one output folder per study
  std::vector<StudyInput> studies;
};

// What the command line's paths hold:
//  - PNG/JPG files (one or more), or a folder holding pictures: one picture study;
//  - a NIfTI file, a DICOM file, or a folder holding DICOM files: one study;
//  - a folder holding no image file of its own but sub-folders and/or NIfTI
//    files: a batch, each sub-folder and NIfTI file one study.
// Throws covidrate::Error naming the path when it holds nothing readable.
InputPlan plan_inputs(const std::vector<std::string>& paths);

struct StudyOptions {
  SegmentOptions segment;
  bool save_probability = false, save_lungs = false;
  // Copied into the report.
  std::string weights, weights_hash;
  std::map<std::string, std::string> weights_metadata;
  std::string architecture = "covid-rate";
  double width = 1;
  bool cpb = true, se = true;
};

struct StudyResult {
  StudyFigures figures;
  RunInfo run;
};

// The pieces of a study that share one grid: a DICOM or NIfTI volume, or
// pictures of one size stacked; pictures of different sizes are one part each.
struct StudyPart {
  Volume ct;                       // after prepare_study its grid and geometry only (no voxels)
  VolumeLungs prepared;            // its input domain and lungs (prepare_study)
  Segmentation seg;                // filled by run_study
  std::vector<std::string> stems;  // pictures: the stem of each slice
};

// A study read and its lungs extracted: the CPU half of run_study, which a
// batch run on a GPU does for the next study while the network runs this one.
struct PreparedStudy {
  StudyInput study;
  std::vector<StudyPart> parts;
  double read_s = 0;
};
PreparedStudy prepare_study(const StudyInput& study);

// Reads, segments and measures the study and writes its folder `out_dir`
// (through out_dir.tmp; a leftover .tmp is replaced). `out_dir` must not exist.
// On any error the .tmp folder is removed and the Error propagates.
StudyResult run_study(const StudyInput& study, const SegmentationNet& net, const StudyOptions& options,
                      const std::string& out_dir);
// The same for a study prepare_study has read. Its report's total_s is the sum
// of the study's own stages (read, lungs, network, write), whether or not they
// overlapped another study's.
StudyResult run_study(PreparedStudy prepared, const SegmentationNet& net, const StudyOptions& options,
                      const std::string& out_dir);

// summary.csv: the header, and one study's row.
std::string summary_csv_header();
std::string summary_csv_row(const StudyFigures& figures, const RunInfo& run);

}  // namespace covidrate::data
