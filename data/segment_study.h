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
#include <utility>
#include <vector>

#include "data/reorient.h"
#include "data/report.h"
#include "data/segment_pipeline.h"

namespace covidrate::data {

enum class StudyKind { DicomSeries, Nifti, Pictures };
const char* to_string(StudyKind kind);

struct StudyInput {
  StudyInput() = default;
  StudyInput(std::string name_, StudyKind kind_, std::vector<std::string> paths_, std::string refusal_ = "")
      : name(std::move(name_)), kind(kind_), paths(std::move(paths_)), refusal(std::move(refusal_)) {}

  std::string name;                // names the output folder in batch mode
  StudyKind kind = StudyKind::DicomSeries;
  std::vector<std::string> paths;  // one folder or file; pictures: one or more files
  // Set when planning already knows the study cannot be read (a study folder
  // holding two NIfTI files): reading it throws this, so in a batch it fails
  // alone, with the reason, and the others go on.
  std::string refusal;
};

struct InputPlan {
  bool batch = false;  // a folder of studies: one output folder per study
  std::vector<StudyInput> studies;
  std::vector<std::string> passed_over;  // a batch's sub-folders that hold no image file
};

// What the command line's paths hold:
//  - PNG/JPG files (one or more), or a folder holding pictures: one picture study;
//  - a NIfTI file, a DICOM file, or a folder holding DICOM files: one study;
//  - a folder holding no image file of its own but sub-folders and/or NIfTI
//    files: a batch, each NIfTI file one study and each sub-folder one (a DICOM
//    series, pictures, or one NIfTI file); sub-folders holding no image file
//    are passed over and listed in `passed_over`.
// `out_dir` (and its .tmp) is never taken for input: a batch may write its
// results inside the folder it reads. Throws covidrate::Error naming the path
// when it holds nothing readable, when a folder mixes pictures with NIfTI files
// or study folders (which would be one study or many?), and when two pictures
// of one study share a name (their masks would overwrite each other).
InputPlan plan_inputs(const std::vector<std::string>& paths, const std::string& out_dir = "");

struct StudyOptions {
  SegmentOptions segment;
  bool save_probability = false, save_lungs = false;
  // Copied into the report.
  std::string weights, weights_hash;
  std::map<std::string, std::string> weights_metadata;
  std::string architecture = "covid-rate";
  double width = 1;
  bool cpb = true, se = true;
  // The command's start before its first study, in seconds: reading the
  // weights onto the device (on a GPU the CUDA context's start too). The same
  // in every study of a batch; not in a study's total.
  double startup_s = 0;
};

struct StudyResult {
  StudyFigures figures;
  RunInfo run;
};

// The pieces of a study that share one grid: a DICOM or NIfTI volume, or
// pictures of one size stacked; pictures of different sizes are one part each.
struct StudyPart {
  // After prepare_study its grid and geometry only (no voxels). Axial: a
  // sagittal or coronal stack is read through permute_axes (data/reorient.h),
  // and its masks are written back on the input's grid.
  Volume ct;
  AxisOrder to_axial = kSameAxes;  // how ct's axes were taken from the input's
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

// run_study in two halves, so that a batch run on a GPU can write one study's
// folder while the network runs the next (cmd_segment's --prefetch):
// segment_study runs the network and measures (out_dir must not exist yet; no
// file is written), write_study writes out_dir through out_dir.tmp as above.
struct SegmentedStudy {
  PreparedStudy prepared;  // its parts now hold their segmentations
  StudyResult result;      // the figures and run info, but for the write's timing and outputs
  double segment_s = 0;    // the network half's own time
};
SegmentedStudy segment_study(PreparedStudy prepared, const SegmentationNet& net, const StudyOptions& options,
                             const std::string& out_dir);
StudyResult write_study(SegmentedStudy segmented, const StudyOptions& options, const std::string& out_dir);

// summary.csv: the header, and one study's row.
std::string summary_csv_header();
std::string summary_csv_row(const StudyFigures& figures, const RunInfo& run);

}  // namespace covidrate::data
