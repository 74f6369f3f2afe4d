// covidrate info PATH [--json]: what a medical image input holds, as the
// readers see it -- the first thing to run on data from a new scanner.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "data/input_domain.h"
#include "data/read_any.h"
#include "data/segment_study.h"
#include "nn/error.h"
#include "tools/cli.h"

namespace covidrate::tools {
namespace {

const char* intensity_name(data::Intensity i) {
  switch (i) {
    case data::Intensity::HounsfieldUnits: return "hounsfield-units";
    case data::Intensity::Picture8Bit: return "picture-8bit";
    case data::Intensity::Label: return "label";
    case data::Intensity::ScannerUnits: return "scanner-units";
  }
  return "unknown";
}

// The patient direction an axis points to most: L/R, P/A, S/I (LPS frame).
char axis_letter(const std::array<double, 3>& d) {
  int k = 0;
  for (int j = 1; j < 3; ++j)
    if (std::fabs(d[j]) > std::fabs(d[k])) k = j;
  static const char positive[] = "LPS", negative[] = "RAI";
  return d[k] >= 0 ? positive[k] : negative[k];
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (static_cast<unsigned char>(c) < 0x20) {
      char buffer[8];
      std::snprintf(buffer, sizeof buffer, "\\u%04x", c);
      out += buffer;
    } else out += c;
  }
  return out + "\"";
}

std::string triple(std::array<double, 3> v, bool json) {
  for (double& x : v)
    if (std::fabs(x) < 1e-9) x = 0;  // float rounding in a file's affine, not geometry
  char buffer[96];
  std::snprintf(buffer, sizeof buffer, json ? "[%.6g, %.6g, %.6g]" : "%.6g %.6g %.6g", v[0], v[1], v[2]);
  return buffer;
}

void usage(FILE* out) {
  std::fprintf(out,
               "usage: covidrate info PATH [--json]\n\n"
               "Reads PATH (a DICOM folder or file, .nii/.nii.gz, .png/.jpg) and prints its kind,\n"
               "size, spacing, orientation, value range and intensity kind; for DICOM, the series\n"
               "chosen and why. Exit status 1 when PATH cannot be read.\n");
}

}  // namespace

int cmd_info(int argc, char** argv) {
  std::string path;
  bool json = false;
  ArgScanner args(argc, argv);
  while (args.next()) {
    if (args.help()) return usage(stdout), 0;
    if (args.is("--json")) json = true;
    else if (path.empty()) path = args.positional();
    else args.unknown();
  }
  CR_USAGE_CHECK(!path.empty(), "a PATH is required");

  // A folder is taken as segment takes it: a DICOM series, one study of
  // pictures (described by its first), or a batch of studies (listed).
  std::string described = path, note;
  if (std::filesystem::is_directory(path)) {
    const data::InputPlan plan = data::plan_inputs({path});
    if (plan.batch) {
      if (json) {
        std::printf("{\n  \"path\": %s,\n  \"kind\": \"studies\",\n  \"studies\": [", json_string(path).c_str());
        for (size_t i = 0; i < plan.studies.size(); ++i)
          std::printf("%s{\"name\": %s, \"kind\": \"%s\", \"path\": %s}", i ? ", " : "",
                      json_string(plan.studies[i].name).c_str(), data::to_string(plan.studies[i].kind),
                      json_string(plan.studies[i].paths.size() == 1 ? plan.studies[i].paths[0] : path).c_str());
        std::printf("]\n}\n");
        return 0;
      }
      std::printf("path:        %s\nkind:        a folder of %zu %s (segment takes each on its own):\n",
                  path.c_str(), plan.studies.size(), plan.studies.size() == 1 ? "study" : "studies");
      for (const data::StudyInput& s : plan.studies)
        std::printf("  %-20s %s, %s\n", s.name.c_str(), data::to_string(s.kind),
                    (s.paths.size() == 1 ? s.paths[0] : std::to_string(s.paths.size()) + " pictures").c_str());
      std::printf("run 'covidrate info' on one of them for its size, spacing and values\n");
      return 0;
    }
    if (plan.studies[0].kind == data::StudyKind::Pictures) {
      described = plan.studies[0].paths[0];
      note = std::to_string(plan.studies[0].paths.size()) + " pictures, one study for segment; this is the first, " +
             std::filesystem::path(described).filename().string();
    }
  }
  const data::InputKind kind = data::input_kind(described);
  data::Volume v = data::read_any(described);
  // A picture has no geometry: segment takes it in the MedSeg layout, 1 mm pixels assumed.
  if (kind == data::InputKind::Picture) {
    data::set_medseg_picture_orientation(v);
    v.description += "; no geometry in a picture: 1 mm pixels assumed, laid out like the MedSeg training pictures "
                     "(as segment takes it)";
  }
  if (!note.empty()) v.description = note + "; " + v.description;
  float lo = 0, hi = 0;
  double mean = 0;
  if (!v.voxels.empty()) {
    const auto [a, b] = std::minmax_element(v.voxels.begin(), v.voxels.end());
    lo = *a, hi = *b;
    for (const float x : v.voxels) mean += x;
    mean /= static_cast<double>(v.voxels.size());
  }
  const std::string orientation{axis_letter(v.row_dir), axis_letter(v.col_dir), axis_letter(v.slice_dir)};
  // DICOM and NIfTI know their kind once read; an unknown file that loaded is DICOM without a preamble.
  const char* kind_name = kind == data::InputKind::Unknown ? "DICOM" : data::to_string(kind);

  if (json) {
    std::printf("{\n  \"path\": %s,\n  \"kind\": \"%s\",\n  \"size\": [%lld, %lld, %lld],\n  \"slices\": %lld,\n",
                json_string(path).c_str(), kind_name, static_cast<long long>(v.nx), static_cast<long long>(v.ny),
                static_cast<long long>(v.nz), static_cast<long long>(v.nz));
    std::printf("  \"spacing_mm\": %s,\n  \"origin_mm\": %s,\n", triple(v.spacing, true).c_str(),
                triple(v.origin, true).c_str());
    std::printf("  \"orientation\": \"%s\",\n  \"row_dir\": %s,\n  \"col_dir\": %s,\n  \"slice_dir\": %s,\n",
                orientation.c_str(), triple(v.row_dir, true).c_str(), triple(v.col_dir, true).c_str(),
                triple(v.slice_dir, true).c_str());
    std::printf("  \"min\": %.6g,\n  \"max\": %.6g,\n  \"mean\": %.6g,\n  \"intensity\": \"%s\",\n", lo, hi, mean,
                intensity_name(v.intensity));
    std::printf("  \"description\": %s,\n  \"warnings\": [", json_string(v.description).c_str());
    for (size_t i = 0; i < v.warnings.size(); ++i)
      std::printf("%s%s", i ? ", " : "", json_string(v.warnings[i]).c_str());
    std::printf("]\n}\n");
    return 0;
  }
  std::printf("path:        %s\n", path.c_str());
  std::printf("kind:        %s\n", kind_name);
  std::printf("size:        %lld x %lld x %lld voxels (x, y, slices)\n", static_cast<long long>(v.nx),
              static_cast<long long>(v.ny), static_cast<long long>(v.nz));
  std::printf("spacing:     %s mm\n", triple(v.spacing, false).c_str());
  std::printf("origin:      %s mm (LPS)\n", triple(v.origin, false).c_str());
  std::printf("orientation: %s (x: %s, y: %s, z: %s)\n", orientation.c_str(), triple(v.row_dir, false).c_str(),
              triple(v.col_dir, false).c_str(), triple(v.slice_dir, false).c_str());
  // NIfTI records no units: non-label values are taken for HU (an MR would be too).
  const bool assumed = kind == data::InputKind::Nifti && v.intensity == data::Intensity::HounsfieldUnits;
  std::printf("values:      %.6g .. %.6g (mean %.6g), %s%s\n", lo, hi, mean, intensity_name(v.intensity),
              assumed ? " (assumed: a NIfTI file does not say its units)" : "");
  std::printf("details:     %s\n", v.description.c_str());
  // What limits how far results on this input can be trusted (missing slices, no patient geometry).
  for (const std::string& w : v.warnings) std::printf("warning:     %s\n", w.c_str());
  return 0;
}

}  // namespace covidrate::tools
