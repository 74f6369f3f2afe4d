// A DICOM series: find the files, pick one series, order its slices along the
// slice normal, derive the geometry from the positions, decode every slice.
#include "data/dicom.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <exception>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

#include "data/dicom_file.h"
#include "kernels/cpu/threads.h"
#include "nn/error.h"

namespace covidrate::data {
namespace {

namespace fs = std::filesystem;
// 2^31 voxels (8 GiB as float): far beyond any CT, so a header claiming more is corrupt.
constexpr int64_t kMaxVoxels = int64_t{1} << 31;
using Vec3 = std::array<double, 3>;

double norm(const Vec3& a) { return std::sqrt(dot(a, a)); }

std::vector<std::string> list_files(const std::string& path) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  CR_CHECK(!ec && fs::exists(status), path << ": no such file or folder");
  if (!fs::is_directory(status)) return {path};
  std::vector<std::string> files;
  // Linked folders are followed (an export may link its series in), each
  // folder entered once (by device and inode: links that point back, or two
  // links to one folder, would otherwise list its files again and again); a
  // folder that cannot be read is an error, not slices silently missing.
  std::set<std::pair<dev_t, ino_t>> entered;
  const auto first_visit = [&](const fs::path& folder) {
    struct stat st {};
    return ::stat(folder.c_str(), &st) != 0 || entered.emplace(st.st_dev, st.st_ino).second;
  };
  first_visit(path);
  fs::recursive_directory_iterator it(path, fs::directory_options::follow_directory_symlink, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    // "._IM0001.dcm": the resource forks macOS leaves on a copied stick, not DICOM.
    if (it->path().filename().string().starts_with("._")) continue;
    if (it->is_directory(ec)) {
      if (!first_visit(it->path())) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(ec)) files.push_back(it->path().string());
  }
  CR_CHECK(!ec, path << ": cannot list the folder"
                     << (it != fs::recursive_directory_iterator() ? " " + it->path().string() : std::string()) << ": "
                     << ec.message());
  std::sort(files.begin(), files.end());  // deterministic choice and messages
  return files;
}

struct Series {
  std::string uid;
  std::vector<dicom::FileHeader> files;
  int64_t slices() const {
    int64_t n = 0;
    for (const auto& f : files) n += f.frames;
    return n;
  }
  bool is_ct() const { return files.front().is_ct(); }
};

// Whether a series can become a volume of grey values: one sample a pixel,
// and every file placed in the patient (a single file needs no place).
bool placeable(const Series& s) {
  return std::all_of(s.files.begin(), s.files.end(), [&](const dicom::FileHeader& f) {
    return f.samples_per_pixel == 1 && (s.files.size() == 1 || (f.position && f.orientation));
  });
}
// The images of a series made at the scan (not a MIP, a reformat or a screen capture).
bool original(const Series& s) { return !s.files.front().is_derived(); }
// Reconstructed for the lungs, by its description or its kernel's name ("LUNG",
// as most vendors name their lung kernels): where a scan was reconstructed twice
// with as many slices (soft tissue and lung), the lung one.
bool for_lungs(const Series& s) {
  std::string text = s.files.front().series_description + " " + s.files.front().convolution_kernel;
  for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text.find("LUNG") != std::string::npos;
}

// A series this reader can make a volume of: placeable, readable (not an
// enhanced CT, no CT slice without its rescale), and not scouts alone.
bool usable(const Series& s) {
  return placeable(s) &&
         std::all_of(s.files.begin(), s.files.end(), [](const dicom::FileHeader& f) { return f.readable(); }) &&
         !std::all_of(s.files.begin(), s.files.end(), [](const dicom::FileHeader& f) { return f.is_localizer(); });
}

// The series to read: CT before other modalities, then those this reader can
// make a volume of (usable: not RGB screen captures, files without a position,
// an enhanced CT, slices without their rescale, or scouts), then original
// images before derived ones (MIPs, reformats), then the most slices, then one
// reconstructed for the lungs; ties go to the first UID in sorted order. Other
// CT series that could have been taken are named in `others`.
const Series& choose_series(const std::vector<Series>& all, std::string& why, std::string& others) {
  const auto rank = [](const Series& s) {
    return std::tuple(s.is_ct(), usable(s), original(s), s.slices(), for_lungs(s));
  };
  const Series* best = &all.front();
  for (const Series& s : all)
    if (rank(s) > rank(*best)) best = &s;
  std::ostringstream os;
  if (all.size() == 1) os << "the only series";
  else
    os << "chosen among " << all.size() << " series: CT, readable as a volume, made at the scan rather than "
       << "derived (MIPs, reformats, screen captures), the most slices, then reconstructed for the lungs";
  why = os.str();
  std::ostringstream rest;
  int count = 0;
  for (const Series& s : all) {
    if (&s == best || !s.is_ct() || !placeable(s) || s.slices() < 2) continue;
    const dicom::FileHeader& f = s.files.front();
    rest << (count++ ? "; " : "") << "'" << (f.series_description.empty() ? s.uid : f.series_description) << "' ("
         << s.slices() << " slices" << (original(s) ? "" : ", derived") << ")";
  }
  if (count > 0 && usable(*best)) {
    const dicom::FileHeader& f = best->files.front();
    others = std::to_string(count) + " other CT series " + (count == 1 ? "is" : "are") + " in this folder (" +
             rest.str() + "); this is '" + (f.series_description.empty() ? best->uid : f.series_description) +
             "' (" + std::to_string(best->slices()) +
             " slices): to read another, point at a folder that holds that series alone";
  }
  return *best;
}

// Leaves out of the chosen series what cannot be one of its slices: an image
// sent twice (the same SOPInstanceUID) and scouts sent under the series' UID.
// Each removal is said in `warnings`.
void drop_strays(std::vector<dicom::FileHeader>& files, std::vector<std::string>& warnings) {
  std::map<std::string, const dicom::FileHeader*> seen;
  std::vector<dicom::FileHeader> kept;
  int duplicates = 0;
  std::string first_duplicate;
  for (const dicom::FileHeader& f : files) {
    if (!f.sop_instance_uid.empty()) {
      const auto [at, fresh] = seen.emplace(f.sop_instance_uid, &f);
      if (!fresh) {
        if (duplicates++ == 0) first_duplicate = f.file + " (the same image as " + at->second->file + ")";
        continue;
      }
    }
    kept.push_back(f);
  }
  if (duplicates > 0)
    warnings.push_back(std::to_string(duplicates) + " file" + (duplicates > 1 ? "s repeat images" : " repeats an image") +
                       " of the series and " + (duplicates > 1 ? "were" : "was") + " left out, e.g. " + first_duplicate);
  const auto scouts = std::count_if(kept.begin(), kept.end(), [](const auto& f) { return f.is_localizer(); });
  if (scouts > 0 && scouts < static_cast<std::ptrdiff_t>(kept.size())) {
    std::string example;
    for (const dicom::FileHeader& f : kept)
      if (f.is_localizer()) {
        example = f.file;
        break;
      }
    kept.erase(std::remove_if(kept.begin(), kept.end(), [](const auto& f) { return f.is_localizer(); }), kept.end());
    warnings.push_back(std::to_string(scouts) + " localizer (scout) image" + (scouts > 1 ? "s" : "") +
                       " in the series left out, e.g. " + example);
  }
  files = std::move(kept);
}

bool nearly_equal(const std::array<double, 6>& a, const std::array<double, 6>& b, double tolerance) {
  for (int k = 0; k < 6; ++k)
    if (std::fabs(a[k] - b[k]) > tolerance) return false;
  return true;
}

// Every file of a multi-file series must describe the same grid in the same plane.
void check_consistent(const std::vector<dicom::FileHeader>& files) {
  const dicom::FileHeader& first = files.front();
  for (const dicom::FileHeader& f : files) {
    CR_CHECK(f.rows == first.rows && f.columns == first.columns,
             "inconsistent DICOM series: " << f.file << " is " << f.columns << " x " << f.rows << " but "
                                           << first.file << " is " << first.columns << " x " << first.rows);
    CR_CHECK(f.frames == 1, f.file << ": a multi-frame file inside a multi-file series is not supported");
    CR_CHECK(f.samples_per_pixel == first.samples_per_pixel,
             "inconsistent DICOM series: " << f.file << " and " << first.file << " differ in SamplesPerPixel");
    CR_CHECK(f.position && f.orientation,
             f.file << ": no ImagePositionPatient/ImageOrientationPatient, so its slice cannot be placed");
    CR_CHECK(nearly_equal(*f.orientation, *first.orientation, 1e-3),
             "inconsistent DICOM series: " << f.file << " and " << first.file << " have different orientations");
    CR_CHECK(std::fabs(f.pixel_spacing[0] - first.pixel_spacing[0]) <= 1e-3 * first.pixel_spacing[0] &&
                 std::fabs(f.pixel_spacing[1] - first.pixel_spacing[1]) <= 1e-3 * first.pixel_spacing[1],
             "inconsistent DICOM series: " << f.file << " and " << first.file << " have different pixel spacings");
  }
}

void set_in_plane_geometry(Volume& v, const std::array<double, 6>& orientation, const std::array<double, 2>& pixel_spacing) {
  Vec3 row{orientation[0], orientation[1], orientation[2]};
  Vec3 col{orientation[3], orientation[4], orientation[5]};
  const double row_norm = norm(row), col_norm = norm(col);
  CR_CHECK(row_norm > 0.5 && col_norm > 0.5 && std::fabs(dot(row, col)) < 0.01 * row_norm * col_norm,
           v.source << ": ImageOrientationPatient is not two orthogonal directions");
  for (int k = 0; k < 3; ++k) row[k] /= row_norm, col[k] /= col_norm;
  v.row_dir = row;
  v.col_dir = col;
  v.slice_dir = cross(row, col);
  // PixelSpacing is (between rows, between columns); x runs along a row.
  v.spacing[0] = pixel_spacing[1];
  v.spacing[1] = pixel_spacing[0];
}

// Sorts the slices along the normal and sets origin, slice_dir and spacing[2]
// from their positions. Returns a note when the spacing is not uniform.
std::string order_slices(Volume& v, std::vector<dicom::FileHeader>& files) {
  const Vec3 normal = v.slice_dir;
  std::sort(files.begin(), files.end(), [&](const auto& a, const auto& b) {
    return dot(*a.position, normal) < dot(*b.position, normal);
  });
  v.origin = *files.front().position;
  if (files.size() == 1) {
    v.spacing[2] = files.front().slice_spacing > 0 ? files.front().slice_spacing : 1.0;
    return "";
  }
  double min_gap = 1e300, max_gap = 0;
  for (size_t k = 1; k < files.size(); ++k) {
    const double gap = dot(*files[k].position, normal) - dot(*files[k - 1].position, normal);
    CR_CHECK(gap > 1e-3, "inconsistent DICOM series: " << files[k - 1].file << " and " << files[k].file
                                                         << " are at the same slice position");
    min_gap = std::min(min_gap, gap);
    max_gap = std::max(max_gap, gap);
  }
  // The step between slices, first to last: along the normal unless the gantry
  // was tilted, in which case the slices also shift within their plane.
  Vec3 step;
  for (int k = 0; k < 3; ++k) step[k] = ((*files.back().position)[k] - v.origin[k]) / double(files.size() - 1);
  v.spacing[2] = norm(step);
  for (int k = 0; k < 3; ++k) v.slice_dir[k] = step[k] / v.spacing[2];
  std::ostringstream note;
  if (max_gap - min_gap > 0.1 * v.spacing[2]) {
    note << "; slice spacing varies from " << min_gap << " to " << max_gap
         << " mm (missing slices?), the mean is used";
    // A regular grid cannot hold these slices where they are: the masks written
    // on it drift from them, and volumes in mL use the mean spacing.
    std::ostringstream w;
    w << "slice spacing varies from " << min_gap << " to " << max_gap << " mm (missing slices?): the masks are on a "
      << "regular grid of the mean " << v.spacing[2] << " mm, so they do not overlay every slice exactly, and "
      << "volumes in mL are approximate (percentages are not affected)";
    v.warnings.push_back(w.str());
  }
  if (const double along = dot(v.slice_dir, normal); along < 0.999) {
    const double degrees = std::acos(std::clamp(along, -1.0, 1.0)) * 180.0 / M_PI;
    note << "; gantry tilt of " << degrees << " degrees: slices are sheared";
    // Volumes take the shear out (voxel_volume_mm3); the masks keep it.
    std::ostringstream w;
    w.precision(3);
    w << "gantry tilt of " << degrees << " degrees: the slices are sheared, and the masks are written on the same "
      << "sheared grid (a NIfTI sform without a qform; a viewer that reads only the qform shows them unsheared)";
    v.warnings.push_back(w.str());
  }
  return note.str();
}

// Calls work(k) for every k in [0, n) on the CPU pool (COVIDRATE_THREADS), one
// file a chunk, so that a thread that finishes a file takes the next one
// (files differ in how long they take to decode). work must not throw.
void for_each_file(size_t n, const std::function<void(size_t)>& work) {
  const int64_t files = static_cast<int64_t>(n);
  cpu::parallel_chunks(files, files, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) work(static_cast<size_t>(k));
  });
}

// Decodes one single-frame file per slice, on all cores: decompressing a
// JPEG Lossless series is most of the time spent reading it. Each GDCM reader
// is private to its thread. After the first error the other slices are
// passed over; it is rethrown once every thread has stopped.
void decode_slices(const std::vector<dicom::FileHeader>& slices, Volume& v) {
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  for_each_file(slices.size(), [&](size_t k) {
    if (failed) return;
    try {
      dicom::decode_pixels(slices[k], v.slice(static_cast<int64_t>(k)));
    } catch (...) {
      const std::lock_guard lock(error_mutex);
      if (!error) error = std::current_exception();
      failed = true;
    }
  });
  if (error) std::rethrow_exception(error);
}

// Every file's header (nullopt: not a DICOM image), in the files' order, on
// all cores: each file is read whole and its structure checked (dicom_file.h),
// which took a quarter of a second for RICORD's 255 files on one thread,
// serial beside the decoding's parallel 2 s on two cores (and most of the
// read on a 16-core machine). The error of the first file in order that
// throws is rethrown, whatever the threads' timing.
std::vector<std::optional<dicom::FileHeader>> read_headers(const std::vector<std::string>& files) {
  std::vector<std::optional<dicom::FileHeader>> headers(files.size());
  std::vector<std::exception_ptr> errors(files.size());
  for_each_file(files.size(), [&](size_t k) {
    try {
      headers[k] = dicom::read_header(files[k]);
    } catch (...) {
      errors[k] = std::current_exception();
    }
  });
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  return headers;
}

}  // namespace

bool looks_like_dicom_file(const std::string& path) {
  return dicom::has_dicom_magic(path) || dicom::starts_like_dicom_stream(path);
}

Volume read_dicom_series(const std::string& path) {
  const std::vector<std::string> files = list_files(path);
  const std::vector<std::optional<dicom::FileHeader>> headers = read_headers(files);
  std::map<std::string, Series> by_uid;
  // Files that are no image but look like one cut short (an empty IM0008 of a
  // PACS export): passed over, but said, since the series may lack a slice.
  std::vector<std::string> cut_short;
  for (size_t k = 0; k < files.size(); ++k) {
    if (const std::optional<dicom::FileHeader>& header = headers[k]) {
      Series& s = by_uid[header->series_uid];
      s.uid = header->series_uid;
      s.files.push_back(*header);
    } else if (const std::string reason = dicom::cut_short_reason(files[k]); !reason.empty()) {
      cut_short.push_back(files[k] + " (" + reason + ")");
    }
  }
  CR_CHECK(!by_uid.empty(), path << ": no DICOM image " << (files.size() == 1 ? "in this file" : "files in this folder")
                                 << (cut_short.empty() ? std::string() : ": " + cut_short.front()));
  std::vector<Series> all;
  for (auto& [uid, s] : by_uid) all.push_back(std::move(s));
  std::string why, others;
  Series series = choose_series(all, why, others);
  Volume v;
  if (!others.empty()) v.warnings.push_back(others);
  if (!cut_short.empty())
    v.warnings.push_back(std::to_string(cut_short.size()) + (cut_short.size() == 1 ? " file here looks" : " files here look") +
                         " like DICOM cut short and " + (cut_short.size() == 1 ? "was" : "were") + " passed over, e.g. " +
                         cut_short.front() + ": if it was a slice of this series, the series lacks it");
  std::vector<dicom::FileHeader>& slices = series.files;
  drop_strays(slices, v.warnings);
  const dicom::FileHeader& first = slices.front();
  // The enhanced CT object keeps each frame's place, spacing and rescale in
  // functional groups, which this reader does not interpret: read as a
  // classic image its values would pass for Hounsfield units unscaled.
  CR_CHECK(!first.enhanced || !first.is_ct(),
           first.file << ": an enhanced multi-frame CT image (functional groups), which covidrate does not read; "
                         "export the series as single-frame (classic) CT images");
  // RescaleIntercept is type 1 in a CT image: without it unsigned stored
  // values (0..4095 say) would be taken for Hounsfield units, and the lungs
  // lost. Signed values without it are taken as HU, as they were stored.
  for (const dicom::FileHeader& f : slices)
    CR_CHECK(f.readable() || f.enhanced, f.file << ": a CT image without RescaleIntercept (0028,1052), so its "
                                                     "unsigned values cannot be turned into Hounsfield units");

  v.source = path;
  v.nx = first.columns;
  v.ny = first.rows;
  v.nz = series.slices();
  v.intensity = first.is_ct() ? Intensity::HounsfieldUnits : Intensity::ScannerUnits;
  std::string note;
  if (slices.size() > 1) {
    check_consistent(slices);
    set_in_plane_geometry(v, *first.orientation, first.pixel_spacing);
    note = order_slices(v, slices);
  } else if (first.orientation) {
    set_in_plane_geometry(v, *first.orientation, first.pixel_spacing);
    if (first.position) v.origin = *first.position;
    v.spacing[2] = first.slice_spacing > 0 ? first.slice_spacing : 1.0;
  } else {
    v.spacing = {first.pixel_spacing[1], first.pixel_spacing[0], first.slice_spacing > 0 ? first.slice_spacing : 1.0};
  }

  // Checked before allocating: a corrupt header must not ask for terabytes.
  CR_CHECK(v.voxel_count() <= kMaxVoxels, first.file << ": the series claims " << v.nx << " x " << v.ny << " x "
                                                      << v.nz << " voxels, more than the limit of " << kMaxVoxels);
  v.voxels.resize(static_cast<size_t>(v.voxel_count()));
  if (slices.size() > 1) {
    decode_slices(slices, v);
  } else {
    const dicom::FrameGeometry g = dicom::decode_pixels(first, v.slice(0));
    // A multi-frame file places its frames itself (GDCM reads the functional groups).
    if (first.frames > 1) {
      set_in_plane_geometry(v, g.orientation, {g.spacing[1], g.spacing[0]});
      v.origin = g.origin;
      v.spacing[2] = g.spacing[2];
    }
  }

  std::ostringstream d;
  d << "DICOM series " << (series.uid.empty() ? "(no SeriesInstanceUID)" : series.uid);
  if (!first.series_description.empty()) d << " '" << first.series_description << "'";
  d << ", " << (first.modality.empty() ? "modality unknown" : first.modality) << ", " << v.nz
    << (v.nz == 1 ? " slice" : " slices") << " (" << why << ")";
  if (!first.is_ct()) d << "; values are scanner intensities, not Hounsfield units";
  else if (first.modality.empty()) d << "; no modality, taken as CT because it has a rescale";
  if (!first.has_pixel_spacing) d << "; no PixelSpacing, 1 mm assumed";
  d << note;
  v.description = d.str();
  return v;
}

std::string dicom_study_key(const std::string& path) {
  const std::vector<std::string> files = list_files(path);
  // A folder of reports or of files that are not DICOM: a look at the first
  // few is enough to pass it by, and keeps planning a batch quick.
  for (size_t k = 0; k < files.size() && k < 32; ++k) {
    try {
      if (const std::optional<dicom::FileHeader> h = dicom::read_header(files[k]); h && !h->study_uid.empty())
        return h->study_uid + " / " + h->patient_id;
    } catch (const Error&) {
      // A broken file is reported when the series is read; here another may answer.
    }
  }
  return "";
}

}  // namespace covidrate::data
