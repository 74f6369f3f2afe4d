#include "data/segment_study.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <future>
#include <fstream>
#include <optional>

#include "data/dicom.h"
#include "data/image2d.h"
#include "data/input_domain.h"
#include "data/nifti.h"
#include "data/read_any.h"
#include "nn/allocator.h"
#include "nn/error.h"
#include "nn/process_status.h"
#include "nn/text_file.h"

namespace covidrate::data {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// "case_01.nii.gz" -> "case_01"; "1-001.jpg" -> "1-001"; a folder keeps its name.
std::string study_name(const fs::path& p) {
  std::string name = p.filename().string();
  if (name.empty()) name = p.parent_path().filename().string();  // "dir/"
  for (const char* ext : {".nii.gz", ".nii", ".NII.GZ", ".NII", ".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG"}) {
    const std::string e = ext;
    if (name.size() > e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0)
      return name.substr(0, name.size() - e.size());
  }
  return name;
}

// Checked to the close, with the reason ("No space left on device").
void write_text(const fs::path& path, const std::string& text) { write_text_atomically(path.string(), text); }

// A picture is taken to be laid out like the training pictures (MedSeg), so
// that the network sees it as it is and the lungs' sides come out right.
Volume read_picture(const std::string& path) {
  Volume v = read_image(path);
  set_medseg_picture_orientation(v);
  return v;
}

// One picture's mask, probability or lung labels as an 8-bit PNG of its own size.
template <class T> void write_slice_png(const fs::path& path, const BasicVolume<T>& v, int64_t z, float scale) {
  std::vector<uint8_t> pixels(v.nx * v.ny);
  const T* s = v.slice(z);
  for (size_t i = 0; i < pixels.size(); ++i)
    pixels[i] = static_cast<uint8_t>(std::clamp(std::lround(static_cast<float>(s[i]) * scale), 0l, 255l));
  write_png_gray(path.string(), pixels.data(), v.nx, v.ny);
}

// The parts' figures as one study: slices renumbered in order, volumes summed.
StudyFigures combine(const std::vector<StudyFigures>& parts) {
  StudyFigures all;
  all.high_opacity_known = !parts.empty();
  for (size_t k = 0; k < parts.size(); ++k) {
    all.high_opacity_known &= parts[k].high_opacity_known;
    for (SliceFigures s : parts[k].slices) {
      s.index = static_cast<int64_t>(all.slices.size());
      all.slices.push_back(s);
    }
    all.infected_slices += parts[k].infected_slices;
    for (auto [sum, part] : {std::pair{&all.right, &parts[k].right}, std::pair{&all.left, &parts[k].left},
                             std::pair{&all.both, &parts[k].both}}) {
      sum->lesion_voxels += part->lesion_voxels;
      sum->lung_voxels += part->lung_voxels;
      sum->lesion_ml += part->lesion_ml;
      sum->lung_ml += part->lung_ml;
      sum->high_opacity_voxels += part->high_opacity_voxels;
      sum->high_opacity_ml += part->high_opacity_ml;
    }
  }
  for (LungFigures* f : {&all.right, &all.left, &all.both}) {
    f->opacity_percent = percent_of_lung(*f, f->lesion_voxels);
    f->high_opacity_percent = percent_of_lung(*f, f->high_opacity_voxels);
  }
  return all;
}

std::vector<StudyPart> read_parts(const StudyInput& study) {
  std::vector<StudyPart> parts;
  if (study.kind != StudyKind::Pictures) {
    CR_CHECK(study.paths.size() == 1, "segment: a " << to_string(study.kind) << " study has one path");
    StudyPart p;
    p.ct = read_any(study.paths[0]);  // by content: a file of unknown kind may still be DICOM
    p.to_axial = axial_axis_order(p.ct);
    if (p.to_axial != kSameAxes) {
      const bool sagittal = std::abs(p.ct.slice_dir[0]) >= std::abs(p.ct.slice_dir[1]);
      p.ct = permute_axes(p.ct, p.to_axial);
      p.ct.description += std::string("; its ") + (sagittal ? "sagittal" : "coronal") + " slices read as " +
                          std::to_string(p.ct.nz) + " axial ones (the voxels' axes permuted, nothing resampled; "
                          "the masks are written on the input's own grid)";
    }
    parts.push_back(std::move(p));
    return parts;
  }
  for (const std::string& path : study.paths) {
    Volume v = read_picture(path);
    const std::string stem = study_name(path);
    if (!parts.empty() && parts.back().ct.nx == v.nx && parts.back().ct.ny == v.ny &&
        parts.back().ct.intensity == v.intensity) {
      Volume& stack = parts.back().ct;
      stack.voxels.insert(stack.voxels.end(), v.voxels.begin(), v.voxels.end());
      ++stack.nz;
      parts.back().stems.push_back(stem);
    } else {
      StudyPart p;
      p.ct = std::move(v);
      p.ct.source = path;
      p.stems.push_back(stem);
      parts.push_back(std::move(p));
    }
  }
  return parts;
}

void write_outputs(const StudyInput& study, const std::vector<StudyPart>& parts, const StudyOptions& o,
                   const fs::path& dir, std::vector<std::string>& outputs) {
  const bool pictures = study.kind == StudyKind::Pictures;
  // One NIfTI per study needs one grid: all volumes, pictures of one size.
  if (parts.size() == 1) {
    const StudyPart& p = parts[0];
    // On the input's own grid, voxel for voxel (a reoriented stack goes back;
    // an axial one is written as it is, not copied).
    const auto write_as_input = [&](const char* name, const auto& v, NiftiType type) {
      if (p.to_axial == kSameAxes) write_nifti((dir / name).string(), v, type);
      else write_nifti((dir / name).string(), permute_axes(v, inverse(p.to_axial)), type);
      outputs.push_back(name);
    };
    write_as_input("lesion_mask.nii.gz", p.seg.lesions, NiftiType::UInt8);
    if (o.save_probability) write_as_input("probability.nii.gz", p.seg.probability, NiftiType::Float32);
    if (o.save_lungs) write_as_input("lungs.nii.gz", p.seg.lungs, NiftiType::UInt8);
  }
  if (!pictures) return;
  fs::create_directories(dir / "masks");
  for (const StudyPart& p : parts)
    for (int64_t z = 0; z < p.ct.nz; ++z) {
      const std::string stem = p.stems[z];
      write_slice_png(dir / "masks" / (stem + ".png"), p.seg.lesions, z, 255.f);
      outputs.push_back("masks/" + stem + ".png");
      if (o.save_probability) {
        write_slice_png(dir / "masks" / (stem + "_probability.png"), p.seg.probability, z, 255.f);
        outputs.push_back("masks/" + stem + "_probability.png");
      }
      if (o.save_lungs) {  // 0 background, 100 right lung, 200 left lung
        write_slice_png(dir / "masks" / (stem + "_lungs.png"), p.seg.lungs, z, 100.f);
        outputs.push_back("masks/" + stem + "_lungs.png");
      }
    }
}

}  // namespace

const char* to_string(StudyKind kind) {
  switch (kind) {
    case StudyKind::DicomSeries: return "dicom-series";
    case StudyKind::Nifti: return "nifti";
    case StudyKind::Pictures: return "pictures";
  }
  return "unknown";
}

namespace {

// The files of one folder that could be input, by kind, sorted; and its sub-folders.
struct FolderListing {
  std::vector<std::string> dicom, pictures, nifti, folders;
};
FolderListing list_folder(const fs::path& path, const std::string& out_dir) {
  FolderListing l;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(path)) {
    const std::string p = entry.path().string();
    if (!out_dir.empty() && (fs::equivalent(entry.path(), out_dir, ec) || fs::equivalent(entry.path(), out_dir + ".tmp", ec)))
      continue;  // the output, written inside the folder read
    if (entry.is_directory()) {
      l.folders.push_back(p);
    } else if (entry.is_regular_file()) {
      switch (input_kind(p)) {
        case InputKind::DicomSeries: l.dicom.push_back(p); break;
        case InputKind::Picture: l.pictures.push_back(p); break;
        case InputKind::Nifti: l.nifti.push_back(p); break;
        case InputKind::Unknown: break;  // README, DICOMDIR index and the like
      }
    }
  }
  for (auto* list : {&l.pictures, &l.nifti, &l.folders}) std::sort(list->begin(), list->end());
  return l;
}

// A study folder of a batch, named after the folder: a DICOM series, its
// pictures as one study, or the one NIfTI file it holds; nothing when it holds
// no image file at all. Anything else is left to the DICOM reader, whose error
// then says what it found.
std::optional<StudyInput> folder_study(const std::string& folder) {
  const FolderListing l = list_folder(folder, "");
  if (l.dicom.empty() && l.pictures.empty() && l.nifti.empty() && l.folders.empty()) return std::nullopt;
  if (l.dicom.empty() && !l.pictures.empty()) return StudyInput{study_name(folder), StudyKind::Pictures, l.pictures};
  if (l.dicom.empty() && l.nifti.size() > 1)
    return StudyInput{study_name(folder), StudyKind::Nifti, l.nifti,
                      folder + " holds " + std::to_string(l.nifti.size()) +
                          " NIfTI files; a study folder holds one (NIfTI files side by side in the batch folder "
                          "are one study each)"};
  if (l.dicom.empty() && l.nifti.size() == 1) return StudyInput{study_name(folder), StudyKind::Nifti, {l.nifti[0]}};
  return StudyInput{study_name(folder), StudyKind::DicomSeries, {folder}};
}

// Whether the folders are the series of one DICOM study (a PACS or CD export:
// STUDY/SERIES/IM...), rather than a batch of studies: at least two hold DICOM
// images, none holds anything else, and all share one StudyInstanceUID and
// PatientID. The
// study is then read as one, its series chosen by the DICOM reader.
bool series_of_one_study(const std::vector<std::string>& folders) {
  if (folders.size() < 2) return false;
  std::string study;
  int series = 0;
  for (const std::string& folder : folders) {
    const std::optional<StudyInput> s = folder_study(folder);
    if (!s) continue;  // no image file: a report, a viewer's files
    if (s->kind != StudyKind::DicomSeries) return false;
    const std::string uid = dicom_study_key(folder);
    if (uid.empty()) continue;  // no image with a study (a dose report, a DICOMDIR)
    if (!study.empty() && uid != study) return false;
    study = uid;
    ++series;
  }
  return series >= 2;
}

}  // namespace

InputPlan plan_inputs(const std::vector<std::string>& paths, const std::string& out_dir) {
  CR_CHECK(!paths.empty(), "no input given");
  InputPlan plan;
  // Several paths: pictures, one study.
  if (paths.size() > 1) {
    StudyInput s{study_name(paths[0]), StudyKind::Pictures, {}};
    for (const std::string& p : paths) {
      CR_CHECK(fs::is_regular_file(p), p << " is not a file");
      CR_CHECK(input_kind(p) == InputKind::Picture,
               p << " is not a PNG or JPG (several inputs must all be pictures)");
      s.paths.push_back(p);
    }
    check_distinct_stems(s.paths, "segment");
    plan.studies.push_back(std::move(s));
    return plan;
  }
  const fs::path path = paths[0];
  CR_CHECK(fs::exists(path), path.string() << " not found");
  if (!fs::is_directory(path)) {
    const InputKind kind = input_kind(path.string());
    const StudyKind study_kind = kind == InputKind::Nifti     ? StudyKind::Nifti
                                 : kind == InputKind::Picture ? StudyKind::Pictures
                                                              : StudyKind::DicomSeries;  // the reader judges
    plan.studies.push_back({study_name(path), study_kind, {path.string()}});
    return plan;
  }
  const FolderListing listing = list_folder(path, out_dir);
  const auto& [dicom, pictures, nifti, folders] = listing;
  if (!dicom.empty() || (pictures.empty() && nifti.empty() && series_of_one_study(folders))) {
    plan.studies.push_back({study_name(path), StudyKind::DicomSeries, {path.string()}});
  } else if (!pictures.empty()) {
    CR_CHECK(nifti.empty() && folders.empty(),
             path.string() << " holds pictures beside " << nifti.size() << " NIfTI file(s) and "
                         << folders.size()
                         << " folder(s): is it one study of pictures or a batch of studies? Put the pictures in a "
                            "folder of their own");
    check_distinct_stems(pictures, "segment");
    plan.studies.push_back({study_name(path), StudyKind::Pictures, pictures});
  } else {
    CR_CHECK(!nifti.empty() || !folders.empty(),
             path.string() << " holds no DICOM, NIfTI, PNG or JPG file and no study folder");
    plan.batch = true;
    for (const std::string& f : folders) {
      if (std::optional<StudyInput> study = folder_study(f)) {
        if (study->kind == StudyKind::Pictures) check_distinct_stems(study->paths, "segment");
        plan.studies.push_back(std::move(*study));
      } else {
        plan.passed_over.push_back(f);
      }
    }
    CR_CHECK(!plan.studies.empty() || !nifti.empty(),
             path.string() << " holds no DICOM, NIfTI, PNG or JPG file, and its "
                         << folders.size() << " folder(s) hold none either");
    for (const std::string& f : nifti) plan.studies.push_back({study_name(f), StudyKind::Nifti, {f}});
    std::sort(plan.studies.begin(), plan.studies.end(),
              [](const StudyInput& a, const StudyInput& b) { return a.name < b.name; });
    for (size_t i = 1; i < plan.studies.size(); ++i)
      CR_CHECK(plan.studies[i].name != plan.studies[i - 1].name,
               "two studies in " << path.string() << " are both named '" << plan.studies[i].name << "'");
    // DIR/<study>.tmp is where a study's folder is written before it is renamed
    // (run_study): a study of that name would be taken for it, skipped as done
    // while the other's folder is written (with --prefetch, at the same time)
    // or removed as an interrupted write.
    for (const StudyInput& s : plan.studies) {
      if (!s.name.ends_with(".tmp")) continue;
      const std::string stem = s.name.substr(0, s.name.size() - 4);
      CR_CHECK(std::none_of(plan.studies.begin(), plan.studies.end(),
                            [&](const StudyInput& other) { return other.name == stem; }),
               "two studies in " << path.string() << " are named '" << stem << "' and '" << s.name
                                          << "': " << s.name << " is the name of " << stem
                                          << "'s folder while it is written; rename one");
    }
  }
  return plan;
}

PreparedStudy prepare_study(const StudyInput& study) {
  const auto start = Clock::now();
  PreparedStudy prepared;
  prepared.study = study;
  CR_CHECK(study.refusal.empty(), study.refusal);
  prepared.parts = read_parts(study);
  prepared.read_s = seconds_since(start);
  for (StudyPart& p : prepared.parts) {
    p.prepared = extract_volume_lungs(p.ct);
    // From here on only the CT's grid is read: its voxels in the input domain
    // (the network's inputs, then the pictures) replace them. 267 MB for 255
    // slices of 512 x 512, held through the network phase and, with
    // --prefetch, beside the study in the network and the one being written.
    std::vector<float>().swap(p.ct.voxels);
  }
  return prepared;
}

StudyResult run_study(const StudyInput& study, const SegmentationNet& net, const StudyOptions& o,
                      const std::string& out_dir) {
  CR_CHECK(!fs::exists(out_dir), "segment: " << out_dir << " already exists");  // before the reading
  return run_study(prepare_study(study), net, o, out_dir);
}

StudyResult run_study(PreparedStudy prepared, const SegmentationNet& net, const StudyOptions& o,
                      const std::string& out_dir) {
  return write_study(segment_study(std::move(prepared), net, o, out_dir), o, out_dir);
}

SegmentedStudy segment_study(PreparedStudy prepared, const SegmentationNet& net, const StudyOptions& o,
                             const std::string& out_dir) {
  CR_CHECK(!fs::exists(out_dir), "segment: " << out_dir << " already exists");
  const auto start = Clock::now();
  SegmentedStudy done;
  done.prepared = std::move(prepared);
  const StudyInput& study = done.prepared.study;
  std::vector<StudyPart>& parts = done.prepared.parts;
  StudyResult& r = done.result;
  r.run.read_s = done.prepared.read_s;
  // A study with no lung in any slice would report 0 % opacity, which reads as
  // healthy lungs; nothing was measured. Refused before the network runs.
  int64_t slices = 0;
  bool any_lung = false;
  for (const StudyPart& p : parts) {
    slices += p.ct.nz;
    for (const uint8_t has : p.prepared.lungs.slice_has_lung) any_lung |= has != 0;
  }
  CR_CHECK(any_lung, "segment: no lung found in " << (study.paths.size() == 1 ? study.paths[0] : study.name) << " ("
                                                  << slices << (slices == 1 ? " slice" : " slices")
                                                  << "): the figures are measured inside the lungs of a chest CT, "
                                                     "and this does not look like one");

  std::vector<StudyFigures> figures;
  for (StudyPart& p : parts) {
    SegmentOptions segment = o.segment;
    segment.keep_probability = o.save_probability;  // nothing else reads the map
    p.seg = segment_volume(p.ct, std::move(p.prepared), net, segment);
    r.run.lungs_s += p.seg.seconds.lungs;
    r.run.network_s += p.seg.seconds.network;
    r.run.network_stages += p.seg.seconds.network_stages;
    r.run.slices_segmented += p.seg.slices_segmented;
    // The domain holds the CT's HU through the window: high opacity is read from it.
    const bool hu = p.ct.intensity == Intensity::HounsfieldUnits;
    figures.push_back(measure(p.seg.lesions, p.seg.lungs, hu ? &p.seg.domain : nullptr));
    for (SliceFigures& s : figures.back().slices) s.certainty_index = p.seg.certainty[static_cast<size_t>(s.index)];
  }
  r.figures = combine(figures);

  RunInfo& run = r.run;
  const Volume& first = parts[0].ct;
  run.study = study.name;
  run.input = study.paths.size() == 1 ? study.paths[0] : fs::path(study.paths[0]).parent_path().string();
  run.input_kind = to_string(study.kind);
  run.description = parts.size() == 1 ? first.description : std::to_string(study.paths.size()) + " pictures";
  for (const StudyPart& p : parts) run.warnings.insert(run.warnings.end(), p.ct.warnings.begin(), p.ct.warnings.end());
  run.nx = first.nx;
  run.ny = first.ny;
  for (const StudyPart& p : parts) {
    run.nx = std::max(run.nx, p.ct.nx);
    run.ny = std::max(run.ny, p.ct.ny);
    run.nz += p.ct.nz;
    // Pictures of one size are stacked into one part, in the study's order (one path a slice).
    if (study.kind == StudyKind::Pictures)
      for (int64_t z = 0; z < p.ct.nz; ++z)
        run.pictures.push_back({fs::path(study.paths[run.pictures.size()]).filename().string(), p.ct.nx, p.ct.ny});
  }
  run.spacing = first.spacing;
  run.spacing_known = study.kind != StudyKind::Pictures;
  // LPS: +z is superior; slice k lies at origin + k * spacing * slice_dir.
  if (study.kind != StudyKind::Pictures && parts.size() == 1 && first.nz > 1 && std::abs(first.slice_dir[2]) > 0.7)
    run.first_slice = first.slice_dir[2] > 0 ? "inferior" : "superior";
  run.weights = o.weights;
  run.weights_fnv1a64 = o.weights_hash;
  run.weights_metadata = o.weights_metadata;
  run.startup_s = o.startup_s;
  run.width = o.width;
  run.cpb = o.cpb;
  run.se = o.se;
  run.architecture = o.architecture;
  run.size = o.segment.size;
  run.batch = o.segment.batch;
  run.device = covidrate::to_string(o.segment.device);
  run.precision = covidrate::to_string(o.segment.precision);
  run.threshold = o.segment.threshold;
  if (o.segment.device != Device::CPU)
    run.device_peak_mib = double(allocator_for(o.segment.device).stats().peak) / (1024.0 * 1024.0);
  done.segment_s = seconds_since(start);
  return done;
}

StudyResult write_study(SegmentedStudy segmented, const StudyOptions& o, const std::string& out_dir) {
  CR_CHECK(!fs::exists(out_dir), "segment: " << out_dir << " already exists");
  const fs::path tmp = start_temp_folder(out_dir);  // an interrupted run's is replaced
  try {
    const StudyInput& study = segmented.prepared.study;
    const std::vector<StudyPart>& parts = segmented.prepared.parts;
    StudyResult& r = segmented.result;
    RunInfo& run = r.run;
    const auto writing = Clock::now();
    // The volumes (gzip) on a second thread while this one draws and encodes
    // the pictures: both are serial, and together they were most of a study's
    // time on a GPU machine.
    std::vector<std::string> volume_outputs;
    std::future<void> volumes = std::async(std::launch::async, [&] {
      write_outputs(study, parts, o, tmp, volume_outputs);
    });
    std::vector<std::string> picture_outputs;
    const RgbImage plot = infection_rate_plot(r.figures);
    write_png_rgb((tmp / "infection_rate.png").string(), plot.rgb.data(), plot.width, plot.height);
    picture_outputs.push_back("infection_rate.png");
    std::vector<RgbImage> tiles;
    for (int64_t index : most_affected_slices(r.figures, 6)) {
      int64_t z = index;  // the global slice index -> its part and slice
      for (const StudyPart& p : parts) {
        if (z < p.ct.nz) {
          tiles.push_back(affected_tile(p.seg.domain, p.seg.lungs, p.seg.lesions, z));
          break;
        }
        z -= p.ct.nz;
      }
    }
    if (!tiles.empty()) {
      const RgbImage m = montage(tiles, std::min<int>(3, static_cast<int>(tiles.size())));
      write_png_rgb((tmp / "most_affected.png").string(), m.rgb.data(), m.width, m.height);
      picture_outputs.push_back("most_affected.png");
    }
    volumes.get();  // rethrows what writing the volumes threw
    run.outputs.insert(run.outputs.end(), volume_outputs.begin(), volume_outputs.end());
    run.outputs.insert(run.outputs.end(), picture_outputs.begin(), picture_outputs.end());
    run.outputs.insert(run.outputs.end(), {"report.json", "report.html", "summary.csv"});
    // Timings end here: what is left is writing three small text files.
    run.write_s = seconds_since(writing);
    // The study's own stages, whether or not another study's overlapped them.
    run.total_s = run.read_s + run.lungs_s + segmented.segment_s + run.write_s;
    if (const double peak = proc_status_bytes("VmHWM"); peak >= 0) run.peak_resident_mib = peak / (1024.0 * 1024.0);
    write_text(tmp / "report.json", report_json(r.figures, run));
    write_text(tmp / "report.html", report_html(r.figures, run));
    write_text(tmp / "summary.csv", summary_csv_header() + summary_csv_row(r.figures, run));
    publish_folder(tmp.string(), out_dir);
    return std::move(r);
  } catch (...) {
    remove_temp_folder(tmp.string());  // its mark last
    throw;
  }
}

std::string summary_csv_header() {
  return "study,input,slices,slices_with_lung,infected_slices,opacity_percent,opacity_left_percent,"
         "opacity_right_percent,lesion_ml,lung_ml,total_s,slices_per_s,high_opacity_percent,weights_fnv1a64,"
         "threshold\n";
}

std::string summary_csv_row(const StudyFigures& f, const RunInfo& run) {
  char numbers[256];
  std::snprintf(numbers, sizeof numbers, "%lld,%lld,%lld,%.4f,%.4f,%.4f,%.3f,%.3f,%.3f,%.2f,",
                static_cast<long long>(run.nz), static_cast<long long>(run.slices_segmented),
                static_cast<long long>(f.infected_slices), f.both.opacity_percent, f.left.opacity_percent,
                f.right.opacity_percent, f.both.lesion_ml, f.both.lung_ml, run.total_s,
                run.total_s > 0 ? run.nz / run.total_s : 0.0);
  // Empty (not 0) where the input is not in HU: unknown, not absent.
  char high[32] = "";
  if (f.high_opacity_known) std::snprintf(high, sizeof high, "%.4f", f.both.high_opacity_percent);
  // What made the row: a batch resumed with other weights or another
  // threshold keeps the studies it had finished, and its summary then mixes
  // rows of both (segment says so on the terminal; the rows say it here).
  char threshold[32];
  std::snprintf(threshold, sizeof threshold, "%g", run.threshold);
  return csv_field(run.study) + "," + csv_field(run.input) + "," + numbers + high + "," +
         csv_field(run.weights_fnv1a64) + "," + threshold + "\n";
}

}  // namespace covidrate::data
