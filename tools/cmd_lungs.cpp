// covidrate lungs PATH --out DIR: the classical lung extraction as a command.
// Writes the right/left lung labels on the input's own grid (so they overlay it
// in any viewer), a picture of the contours to check them by eye, and the lung
// sizes. With --reference it also scores the extraction against expert lung
// masks, which is how docs/data.md measures it and draws its figures.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "data/image2d.h"
#include "data/input_domain.h"
#include "data/lungs.h"
#include "data/reorient.h"
#include "data/nifti.h"
#include "data/overlay.h"
#include "data/read_any.h"
#include "nn/error.h"
#include "nn/json.h"
#include "nn/text_file.h"
#include "tools/cli.h"

namespace covidrate::tools {
namespace {

namespace fs = std::filesystem;
using namespace covidrate::data;

// Expert outlines, drawn beside ours: yellow for label 1, magenta for label 2.
constexpr Rgb kReferenceRightColour{255, 230, 0};
constexpr Rgb kReferenceLeftColour{255, 0, 255};
constexpr int64_t kMaxTiles = 6;

void usage(FILE* out) {
  std::fprintf(out,
               "usage: covidrate lungs PATH --out DIR [--json] [--tiles N] [--slices LIST]\n"
               "                       [--reference MASK] [--lesions MASK]\n\n"
               "Extracts the lungs of PATH (a DICOM folder or file, .nii/.nii.gz, .png/.jpg) with the\n"
               "classical method of docs/data.md and writes, into the new folder DIR:\n"
               "  lungs.nii.gz        labels 1 = right lung, 2 = left lung, on the input's grid and geometry\n"
               "                      (lungs.png with pixel values 0/1/2 for a PNG/JPG input, which is taken\n"
               "                      to be laid out like the MedSeg training pictures, as segment does)\n"
               "  lungs_overlay.png   lung contours (green right, blue left) over the lung window\n"
               "and prints each lung's volume in mL (area in mm^2 for one slice, in pixels for a picture),\n"
               "the slices with lung and the time taken.\n\n"
               "  --json            print the numbers as JSON\n"
               "  --tiles N         slices in the overlay, 1..6 (default 6), spread over the slices with lung\n"
               "  --slices LIST     draw these slices instead (comma-separated indexes, at most 6; of the\n"
               "                    axial slices: a sagittal or coronal stack is read as axial ones)\n"
               "  --reference MASK  expert lung labels on the same grid, labelled as ours (1 right, 2 left,\n"
               "                    by the header): prints the Dice per lung and draws their contours\n"
               "                    (yellow 1, magenta 2)\n"
               "  --lesions MASK    a lesion mask on the same grid: its contours drawn in red\n\n"
               "Exit status 2 for a usage error, 1 when PATH cannot be read or DIR cannot be written.\n");
}

std::vector<int64_t> parse_slices(const std::string& text) {
  std::vector<int64_t> slices;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    slices.push_back(parse_integer("--slices", item, 0, 1000000));
  }
  CR_USAGE_CHECK(!slices.empty() && slices.size() <= size_t(kMaxTiles),
                 "--slices: give 1 to " << kMaxTiles << " indexes, got '" << text << "'");
  return slices;
}

// A picture is taken to be laid out like the MedSeg training pictures, as
// `covidrate segment` takes it, so that right and left come out the same.
Volume read_input(const std::string& path) {
  Volume v = read_any(path);
  if (input_kind(path) == InputKind::Picture) set_medseg_picture_orientation(v);
  return v;
}

// A mask on the input's grid (`input`: its sizes), taken to the axial view the
// extraction works on (`to_axial`, data/reorient.h).
Volume read_mask_like(const std::string& option, const std::string& path, const VolumeGrid& input,
                      const AxisOrder& to_axial) {
  Volume m = read_input(path);
  CR_CHECK(m.nx == input.nx && m.ny == input.ny && m.nz == input.nz,
           option << " " << path << ": " << m.nx << "x" << m.ny << "x" << m.nz << " voxels, the input has "
                  << input.nx << "x" << input.ny << "x" << input.nz);
  return to_axial == kSameAxes ? m : permute_axes(m, to_axial);
}

// `count` slices spread evenly over the slices with lung (over all slices when
// none has lung), in increasing order.
std::vector<int64_t> spread_slices(const std::vector<uint8_t>& has_lung, int64_t count) {
  std::vector<int64_t> candidates;
  for (size_t z = 0; z < has_lung.size(); ++z)
    if (has_lung[z]) candidates.push_back(static_cast<int64_t>(z));
  if (candidates.empty())
    for (size_t z = 0; z < has_lung.size(); ++z) candidates.push_back(static_cast<int64_t>(z));
  const int64_t n = std::min<int64_t>(count, static_cast<int64_t>(candidates.size()));
  std::vector<int64_t> picked;
  for (int64_t k = 0; k < n; ++k) {
    // Centres of n equal parts, so the first and last tiles are not the run's thin edges.
    const auto index = static_cast<size_t>((2 * k + 1) * static_cast<int64_t>(candidates.size()) / (2 * n));
    picked.push_back(candidates[index]);
  }
  return picked;
}

RgbImage overlay(const Volume& ct, const LabelVolume& labels, const Volume* reference, const Volume* lesions,
                 const std::vector<int64_t>& slices) {
  std::vector<RgbImage> tiles;
  for (const int64_t z : slices) {
    // Everything turned to the radiological display, labels with the image.
    RgbImage tile = grey_slice(radiological_slice(ct, z), 0);
    if (reference) {
      const Volume ref = radiological_slice(*reference, z);
      draw_outline(tile, ref, 0, kRightLung, kReferenceRightColour);
      draw_outline(tile, ref, 0, kLeftLung, kReferenceLeftColour);
    }
    if (lesions) draw_outline(tile, radiological_slice(*lesions, z), 0, 1, kLesionColour);
    const LabelVolume ours = radiological_slice(labels, z);
    draw_outline(tile, ours, 0, kRightLung, kRightLungColour);
    draw_outline(tile, ours, 0, kLeftLung, kLeftLungColour);
    tiles.push_back(std::move(tile));
  }
  const int n = static_cast<int>(tiles.size());
  return montage(tiles, n <= 3 ? n : (n + 1) / 2);
}

void write_labels_png(const std::string& path, const LabelVolume& labels) {
  write_png_gray(path, labels.voxels.data(), labels.nx, labels.ny);
}

}  // namespace

int cmd_lungs(int argc, char** argv) {
  std::string path, out_dir, reference_path, lesions_path;
  bool json = false;
  int64_t tiles = kMaxTiles;
  std::vector<int64_t> slices;
  ArgScanner args(argc, argv);
  while (args.next()) {
    if (args.help()) return usage(stdout), 0;
    if (args.is("--json")) json = true;
    else if (args.is("--out")) out_dir = args.folder_value();
    else if (args.is("--tiles")) tiles = args.integer(1, kMaxTiles);
    else if (args.is("--slices")) slices = parse_slices(args.value());
    else if (args.is("--reference")) reference_path = args.value();
    else if (args.is("--lesions")) lesions_path = args.value();
    else if (path.empty()) path = args.positional();
    else args.unknown();
  }
  CR_USAGE_CHECK(!path.empty() && !out_dir.empty(), "a PATH and --out are required");
  // Refused before the slow reading, not after it.
  CR_CHECK(!fs::exists(out_dir), out_dir << " already exists; lungs writes a new folder");
  check_output_folder("lungs", "--out", out_dir);

  using Clock = std::chrono::steady_clock;
  const auto seconds_since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  const auto t0 = Clock::now();
  const bool picture = input_kind(path) == InputKind::Picture;
  Volume ct = read_input(path);
  // A sagittal or coronal stack is read as axial slices (exactly: data/reorient.h);
  // the labels go back on its own grid.
  const VolumeGrid input_grid = ct;
  const AxisOrder to_axial = axial_axis_order(ct);
  if (to_axial != kSameAxes) ct = permute_axes(ct, to_axial);
  const double read_s = seconds_since(t0);
  Volume reference, lesions;
  if (!reference_path.empty()) {
    reference = read_mask_like("--reference", reference_path, input_grid, to_axial);
    // A CT given by mistake would score Dice 0 and look like a failed extraction.
    const auto [lo, hi] = std::minmax_element(reference.voxels.begin(), reference.voxels.end());
    const bool labels = std::all_of(reference.voxels.begin(), reference.voxels.end(),
                                    [](float v) { return v == 0.f || v == 1.f || v == 2.f; });
    CR_CHECK(labels, "--reference " << reference_path << ": values " << *lo << " .. " << *hi
                                    << " are not lung labels (0 none, 1 right lung, 2 left lung)");
  }
  if (!lesions_path.empty()) {
    lesions = read_mask_like("--lesions", lesions_path, input_grid, to_axial);
    // A mask: 0 and one other value (1, or 255 in a picture). A CT, a
    // probability map or lung labels would be outlined as "lesion".
    float marked = 0;
    for (const float v : lesions.voxels) {
      CR_CHECK(v == 0.f || marked == 0.f || v == marked,
               "--lesions " << lesions_path << ": values " << marked << " and " << v
                            << " are not a lesion mask (0 and one other value, e.g. 1 or 255)");
      if (v != 0.f) marked = v;
    }
    for (float& v : lesions.voxels) v = v != 0.f ? 1.f : 0.f;
  }
  for (const int64_t z : slices)
    CR_CHECK(z < ct.nz, "--slices: slice " << z << " outside 0.." << ct.nz - 1 << " of " << path);

  // What limits the result (slices missing from a series: the labels sit on a
  // regular grid of the mean spacing; a NIfTI header that places nothing: the
  // sides may be swapped), on stderr as segment says it, before the long part.
  for (const std::string& w : ct.warnings) std::fprintf(stderr, "lungs: warning: %s\n", w.c_str());
  // A whole CT takes seconds (11 s for 255 slices on 2 cores) in one step with no progress of its own.
  if (ct.nz > 16)
    std::fprintf(stderr, "lungs: extracting the lungs of %lld slices...\n", static_cast<long long>(ct.nz));
  const auto t1 = Clock::now();
  const LungSegmentation seg = ClassicalLungExtractor().extract(ct);
  const double extract_s = seconds_since(t1);

  const auto t2 = Clock::now();
  TempFolder tmp{start_temp_folder(out_dir)};  // an interrupted run's is replaced
  if (picture) write_labels_png((tmp.path / "lungs.png").string(), seg.labels);
  else if (to_axial == kSameAxes) write_nifti((tmp.path / "lungs.nii.gz").string(), seg.labels);
  else write_nifti((tmp.path / "lungs.nii.gz").string(), permute_axes(seg.labels, inverse(to_axial)));
  if (slices.empty()) slices = spread_slices(seg.slice_has_lung, tiles);
  const RgbImage picture_out = overlay(ct, seg.labels, reference_path.empty() ? nullptr : &reference,
                                       lesions_path.empty() ? nullptr : &lesions, slices);
  write_png_rgb((tmp.path / "lungs_overlay.png").string(), picture_out.rgb.data(), picture_out.width,
                picture_out.height);
  publish_folder(tmp.path.string(), out_dir);
  tmp.kept = true;
  const double write_s = seconds_since(t2);

  // Sizes: mL for a volume, mm^2 for one slice, pixels for a picture of unknown pixel size.
  const char* unit = picture ? "px" : ct.nz == 1 ? "mm2" : "mL";
  const double per_voxel = picture ? 1.0
                           : ct.nz == 1 ? ct.spacing[0] * ct.spacing[1]
                                        : voxel_volume_mm3(ct) / 1000.0;  // a gantry tilt's shear taken out
  const double right = static_cast<double>(seg.count(kRightLung)) * per_voxel;
  const double left = static_cast<double>(seg.count(kLeftLung)) * per_voxel;
  const auto with_lung = std::count(seg.slice_has_lung.begin(), seg.slice_has_lung.end(), uint8_t{1});
  double dice_right = 0, dice_left = 0;
  if (!reference_path.empty()) {
    dice_right = dice(seg.labels, reference, kRightLung);
    dice_left = dice(seg.labels, reference, kLeftLung);
  }
  const double total_s = seconds_since(t0);

  if (json) {
    std::printf("{\n  \"out\": %s,\n  \"unit\": \"%s\",\n  \"right\": %.6g,\n  \"left\": %.6g,\n",
                json::quote(out_dir).c_str(), unit, right, left);
    std::printf("  \"slices\": %lld,\n  \"slices_with_lung\": %lld,\n", static_cast<long long>(ct.nz),
                static_cast<long long>(with_lung));
    if (!reference_path.empty())
      std::printf("  \"dice_right\": %.4f,\n  \"dice_left\": %.4f,\n", dice_right, dice_left);
    std::printf("  \"seconds\": {\"read\": %.3f, \"extract\": %.3f, \"write\": %.3f, \"total\": %.3f}\n}\n", read_s,
                extract_s, write_s, total_s);
    return 0;
  }
  std::printf("lungs: %s -> %s\n", path.c_str(), out_dir.c_str());
  std::printf("right lung:  %.1f %s\nleft lung:   %.1f %s\n", right, unit, left, unit);
  std::printf("with lung:   %lld of %lld slices\n", static_cast<long long>(with_lung), static_cast<long long>(ct.nz));
  if (!reference_path.empty()) std::printf("dice:        right %.3f, left %.3f\n", dice_right, dice_left);
  std::printf("time:        %.2f s (read %.2f, extract %.2f, write %.2f)\n", total_s, read_s, extract_s, write_s);
  return 0;
}

}  // namespace covidrate::tools
