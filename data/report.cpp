#include "data/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <sstream>

#include "data/input_domain.h"
#include "data/lungs.h"
#include "kernels/ops.h"
#include "nn/error.h"
#include "nn/json.h"
#include "nn/text_file.h"

namespace covidrate::data {

namespace {

std::string number(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.6g", std::isfinite(v) ? v : 0.0);
  return text;
}

// null where there is no value (NaN): a slice not sent to the network has no certainty.
std::string number_or_null(double v) { return std::isnan(v) ? "null" : number(v); }

std::string percent(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f%%", v);
  return text;
}

void finish(LungFigures& f, double voxel_ml) {
  f.lesion_ml = static_cast<double>(f.lesion_voxels) * voxel_ml;
  f.lung_ml = static_cast<double>(f.lung_voxels) * voxel_ml;
  f.high_opacity_ml = static_cast<double>(f.high_opacity_voxels) * voxel_ml;
  f.opacity_percent = percent_of_lung(f, f.lesion_voxels);
  f.high_opacity_percent = percent_of_lung(f, f.high_opacity_voxels);
}

std::string lung_json(const LungFigures& f, bool high_opacity_known) {
  std::string json = "{\"opacity_percent\": " + number(f.opacity_percent) + ", \"lesion_ml\": " +
                     number(f.lesion_ml) + ", \"lung_ml\": " + number(f.lung_ml) +
                     ", \"lesion_voxels\": " + std::to_string(f.lesion_voxels) +
                     ", \"lung_voxels\": " + std::to_string(f.lung_voxels);
  if (high_opacity_known)
    json += ", \"high_opacity_percent\": " + number(f.high_opacity_percent) + ", \"high_opacity_ml\": " +
            number(f.high_opacity_ml) + ", \"high_opacity_voxels\": " + std::to_string(f.high_opacity_voxels);
  else
    json += ", \"high_opacity_percent\": null, \"high_opacity_ml\": null, \"high_opacity_voxels\": null";
  return json + "}";
}

}  // namespace

StudyFigures measure(const LabelVolume& lesions, const LabelVolume& lungs, const Volume* hu_domain) {
  CR_CHECK(lesions.nx == lungs.nx && lesions.ny == lungs.ny && lesions.nz == lungs.nz,
           "measure: lesion mask and lung labels have different grids");
  CR_CHECK(!hu_domain || (hu_domain->nx == lungs.nx && hu_domain->ny == lungs.ny && hu_domain->nz == lungs.nz &&
                          hu_domain->voxels.size() == lungs.voxels.size()),
           "measure: the input domain and the lung labels have different grids");
  // The same mapping that made the domain, so a voxel at exactly -200 HU compares equal.
  const float high = hu_to_domain(kHighOpacityMinHu);
  const double pixel_mm2 = lesions.spacing[0] * lesions.spacing[1];
  const double voxel_ml = voxel_volume_mm3(lesions) / 1000.0;  // a gantry tilt's shear taken out
  StudyFigures f;
  f.high_opacity_known = hu_domain != nullptr;
  const int64_t pixels = lesions.nx * lesions.ny;
  for (int64_t z = 0; z < lesions.nz; ++z) {
    SliceFigures s;
    s.index = z;
    const uint8_t* lesion = lesions.slice(z);
    const uint8_t* lung = lungs.slice(z);
    const float* domain = hu_domain ? hu_domain->slice(z) : nullptr;
    for (int64_t i = 0; i < pixels; ++i) {
      const bool is_lesion = lesion[i] != 0;
      LungFigures* side = lung[i] == kRightLung ? &f.right : lung[i] == kLeftLung ? &f.left : nullptr;
      s.lesion_pixels += is_lesion;
      if (side) {
        ++s.lung_pixels;
        ++side->lung_voxels;
        side->lesion_voxels += is_lesion;
        const bool dense = is_lesion && domain && domain[i] >= high;
        side->high_opacity_voxels += dense;
        s.high_opacity_pixels += dense;
      }
    }
    s.lesion_mm2 = static_cast<double>(s.lesion_pixels) * pixel_mm2;
    s.lung_mm2 = static_cast<double>(s.lung_pixels) * pixel_mm2;
    s.infection_rate = s.lung_pixels > 0 ? static_cast<double>(s.lesion_pixels) / s.lung_pixels : 0.0;
    s.infected = s.infection_rate > kInfectedSliceRate;
    f.infected_slices += s.infected;
    f.slices.push_back(s);
  }
  f.both.lesion_voxels = f.right.lesion_voxels + f.left.lesion_voxels;
  f.both.lung_voxels = f.right.lung_voxels + f.left.lung_voxels;
  f.both.high_opacity_voxels = f.right.high_opacity_voxels + f.left.high_opacity_voxels;
  finish(f.right, voxel_ml);
  finish(f.left, voxel_ml);
  finish(f.both, voxel_ml);
  return f;
}

double StudyFigures::mean_certainty_index() const {
  double sum = 0;
  int64_t count = 0;
  for (const SliceFigures& s : slices)
    if (s.certainty_index > 0) sum += s.certainty_index, ++count;  // NaN and 0 are not > 0
  return count > 0 ? sum / static_cast<double>(count) : std::numeric_limits<double>::quiet_NaN();
}

uint64_t fnv1a64(std::string_view bytes, uint64_t hash) {
  for (const char c : bytes) hash = (hash ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  return hash;
}

std::string file_fnv1a64(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  CR_CHECK(in, "cannot read " << path);
  uint64_t hash = kFnv1a64Basis;
  std::vector<char> buffer(1 << 16);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    hash = fnv1a64(std::string_view(buffer.data(), static_cast<size_t>(in.gcount())), hash);
  }
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

std::string report_json(const StudyFigures& f, const RunInfo& run) {
  std::ostringstream o;
  const double slices_per_s = run.total_s > 0 ? run.nz / run.total_s : 0.0;
  o << "{\n  \"study\": " << json::quote(run.study) << ",\n  \"input\": {\"path\": " << json::quote(run.input)
    << ", \"kind\": " << json::quote(run.input_kind) << ", \"description\": " << json::quote(run.description)
    << ", \"size\": [" << run.nx << ", " << run.ny << ", " << run.nz << "], \"spacing_mm\": ["
    << number(run.spacing[0]) << ", " << number(run.spacing[1]) << ", " << number(run.spacing[2])
    << "], \"spacing_known\": " << (run.spacing_known ? "true" : "false")
    << ", \"first_slice\": " << (run.first_slice.empty() ? "null" : json::quote(run.first_slice))
    << ", \"warnings\": [";
  for (size_t i = 0; i < run.warnings.size(); ++i) o << (i ? ", " : "") << json::quote(run.warnings[i]);
  o << "]},\n";
  o << "  \"weights\": {\"path\": " << json::quote(run.weights) << ", \"fnv1a64\": " << json::quote(run.weights_fnv1a64)
    << ", \"architecture\": " << json::quote(run.architecture) << ", \"width\": " << number(run.width)
    << ", \"cpb\": " << (run.cpb ? "true" : "false") << ", \"se\": " << (run.se ? "true" : "false")
    << ", \"size\": " << run.size << ", \"metadata\": {";
  bool first = true;
  for (const auto& [key, value] : run.weights_metadata) {
    o << (first ? "" : ", ") << json::quote(key) << ": " << json::quote(value);
    first = false;
  }
  o << "}},\n  \"device\": " << json::quote(run.device) << ",\n  \"precision\": " << json::quote(run.precision)
    << ",\n  \"threshold\": " << number(run.threshold) << ",\n  \"batch\": " << run.batch
    << ",\n  \"algorithm_searches\": " << run.network_stages.algorithm_searches
    << ",\n  \"device_system_allocations\": " << run.network_stages.system_allocations << ",\n";
  const bool known = f.high_opacity_known;
  o << "  \"study_figures\": {\"both_lungs\": " << lung_json(f.both, known)
    << ",\n    \"left_lung\": " << lung_json(f.left, known) << ",\n    \"right_lung\": " << lung_json(f.right, known)
    << ",\n    \"high_opacity_min_hu\": " << number(kHighOpacityMinHu) << ", \"slices\": " << f.slices.size()
    << ", \"slices_with_lung\": " << run.slices_segmented << ", \"infected_slices\": " << f.infected_slices
    << ", \"infected_slice_rate\": " << number(kInfectedSliceRate)
    << ", \"mean_certainty_index\": " << number_or_null(f.mean_certainty_index()) << "},\n";
  o << "  \"timings_s\": {\"startup\": " << number(run.startup_s) << ", \"read\": " << number(run.read_s)
    << ", \"lungs\": " << number(run.lungs_s)
    << ", \"network\": " << number(run.network_s) << ", \"network_stages\": {\"prepare_wait\": "
    << number(run.network_stages.prepare_wait) << ", \"upload\": " << number(run.network_stages.upload)
    << ", \"forward\": " << number(run.network_stages.forward) << ", \"download\": "
    << number(run.network_stages.download) << ", \"device_wait\": " << number(run.network_stages.device_wait)
    << ", \"put_back_wait\": " << number(run.network_stages.put_back_wait)
    << "}, \"write\": " << number(run.write_s)
    << ", \"total\": " << number(run.total_s)
    << ", \"slices_per_s\": " << number(slices_per_s) << "},\n";
  const auto mib_or_null = [](double mib) { return mib < 0 ? std::string("null") : number(std::round(mib)); };
  o << "  \"memory_mib\": {\"process_peak_resident\": " << mib_or_null(run.peak_resident_mib)
    << ", \"device_peak\": " << mib_or_null(run.device_peak_mib) << "},\n  \"outputs\": [";
  for (size_t i = 0; i < run.outputs.size(); ++i) o << (i ? ", " : "") << json::quote(run.outputs[i]);
  o << "],\n  \"slices\": [";
  for (size_t i = 0; i < f.slices.size(); ++i) {
    const SliceFigures& s = f.slices[i];
    o << (i ? "," : "") << "\n    {\"index\": " << s.index << ", \"lesion_px\": " << s.lesion_pixels
      << ", \"lesion_mm2\": " << number(s.lesion_mm2) << ", \"lung_px\": " << s.lung_pixels
      << ", \"lung_mm2\": " << number(s.lung_mm2) << ", \"infection_rate\": " << number(s.infection_rate)
      << ", \"infected\": " << (s.infected ? "true" : "false") << ", \"high_opacity_px\": "
      << (f.high_opacity_known ? std::to_string(s.high_opacity_pixels) : std::string("null"))
      << ", \"certainty_index\": " << number_or_null(s.certainty_index);
    if (static_cast<size_t>(s.index) < run.pictures.size()) {
      const RunInfo::Picture& p = run.pictures[static_cast<size_t>(s.index)];
      o << ", \"picture\": " << json::quote(p.name) << ", \"picture_size\": [" << p.nx << ", " << p.ny << "]";
    }
    o << "}";
  }
  o << "\n  ]\n}\n";
  return o.str();
}

std::string summary_line(const StudyFigures& f, const RunInfo& run) {
  char text[512];
  std::snprintf(text, sizeof text,
                "%s: opacity %.2f%% (left %.2f%%, right %.2f%%), %lld/%lld slices infected, %.1f slices/s",
                run.study.c_str(), f.both.opacity_percent, f.left.opacity_percent, f.right.opacity_percent,
                static_cast<long long>(f.infected_slices), static_cast<long long>(f.slices.size()),
                run.total_s > 0 ? run.nz / run.total_s : 0.0);
  return text;
}

double plot_max_rate(const StudyFigures& f) {
  double top = 0;
  for (const SliceFigures& s : f.slices) top = std::max(top, s.infection_rate);
  // Round up to a tenth of a power of ten (0.02, 0.3, 1...) and never below
  // twice the infected line, so that the line is always visible.
  top = std::max(top, 2 * kInfectedSliceRate);
  const double step = std::pow(10.0, std::floor(std::log10(top)) - 1);
  return std::min(1.0, std::ceil(top / step - 1e-9) * step);
}

RgbImage infection_rate_plot(const StudyFigures& f, int64_t width, int64_t height) {
  CR_CHECK(width >= 64 && height >= 48, "infection_rate_plot: " << width << " x " << height << " is too small");
  RgbImage img{width, height, std::vector<uint8_t>(width * height * 3, 255)};
  const int64_t left = 52, right = width - 10, top = 10, bottom = height - 30;
  const double y_max = plot_max_rate(f);
  auto y_of = [&](double rate) { return bottom - static_cast<int64_t>(std::lround(rate / y_max * (bottom - top))); };
  // Grid at every fifth of the axis.
  for (int k = 1; k <= 5; ++k) {
    const int64_t y = y_of(y_max * k / 5);
    fill_rect(img, left, y, right, y + 1, {225, 225, 225});
  }
  const int64_t n = static_cast<int64_t>(f.slices.size());
  const double bar = n > 0 ? static_cast<double>(right - left) / n : 0;
  for (int64_t i = 0; i < n; ++i) {
    const SliceFigures& s = f.slices[i];
    const int64_t x0 = left + static_cast<int64_t>(std::floor(i * bar));
    const int64_t x1 = std::max(x0 + 1, left + static_cast<int64_t>(std::floor((i + 1) * bar)) - (bar >= 4 ? 1 : 0));
    fill_rect(img, x0, y_of(s.infection_rate), x1, bottom, s.infected ? Rgb{220, 40, 40} : Rgb{120, 120, 120});
    // The consolidation-range part of the bar, at its foot.
    if (s.high_opacity_pixels > 0 && s.lung_pixels > 0) {
      const double dense = static_cast<double>(s.high_opacity_pixels) / static_cast<double>(s.lung_pixels);
      fill_rect(img, x0, y_of(dense), x1, bottom, s.infected ? Rgb{110, 0, 0} : Rgb{50, 50, 50});
    }
  }
  // The infected-slice line, dashed.
  const int64_t y_line = y_of(kInfectedSliceRate);
  for (int64_t x = left; x < right; x += 8) fill_rect(img, x, y_line, x + 4, y_line + 1, {0, 90, 200});
  // Axes with ticks: every fifth of the rate, every tenth of the slices.
  fill_rect(img, left - 1, top, left, bottom + 1, {0, 0, 0});
  fill_rect(img, left - 1, bottom, right, bottom + 1, {0, 0, 0});
  for (int k = 0; k <= 5; ++k) {
    const int64_t y = y_of(y_max * k / 5);
    fill_rect(img, left - 6, y, left - 1, y + 1, {0, 0, 0});
  }
  for (int k = 0; k <= 10; ++k) {
    const int64_t x = left + (right - left) * k / 10;
    fill_rect(img, x, bottom, x + 1, bottom + 6, {0, 0, 0});
  }
  // Labels: the rate at the top of the axis, the first and last slice index.
  char top_label[32];
  std::snprintf(top_label, sizeof top_label, "%g%%", 100 * y_max);
  draw_text(img, 2, top + 3, top_label, 2, {0, 0, 0});
  draw_text(img, left - 12, bottom - 10, "0", 2, {0, 0, 0});
  draw_text(img, left, bottom + 10, "0", 2, {0, 0, 0});
  if (n > 1) {
    const std::string last = std::to_string(n - 1);
    draw_text(img, right - 8 * static_cast<int64_t>(last.size()), bottom + 10, last, 2, {0, 0, 0});
  }
  return img;
}

std::vector<int64_t> most_affected_slices(const StudyFigures& f, int64_t count) {
  std::vector<int64_t> order(f.slices.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return f.slices[a].lesion_pixels > f.slices[b].lesion_pixels; });
  std::vector<int64_t> chosen;
  for (int64_t z : order) {
    if (static_cast<int64_t>(chosen.size()) == count || f.slices[z].lesion_pixels == 0) break;
    chosen.push_back(z);
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

RgbImage affected_tile(const Volume& ct, const LabelVolume& lungs, const LabelVolume& lesions, int64_t z) {
  // In the radiological display whatever order the file stores its voxels in,
  // as `covidrate lungs` draws: a NIfTI stored right-to-left and anterior-last
  // came out upside down and mirrored, its right lung on the picture's right.
  RgbImage tile = grey_slice(radiological_slice(ct, z), 0);
  const LabelVolume lung = radiological_slice(lungs, z), lesion = radiological_slice(lesions, z);
  draw_outline(tile, lung, 0, kRightLung, kRightLungColour);
  draw_outline(tile, lung, 0, kLeftLung, kLeftLungColour);
  draw_outline(tile, lesion, 0, 1.f, kLesionColour);
  return tile;
}

std::string report_html(const StudyFigures& f, const RunInfo& run) {
  std::ostringstream o;
  const std::vector<int64_t> shown = most_affected_slices(f, 6);
  o << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>covidrate segment: " << xml_escape(run.study)
    << "</title>\n<style>body{font-family:sans-serif;max-width:980px;margin:2em auto}"
       "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       "img{max-width:100%}</style></head><body>\n";
  o << "<h1>Lesion report: " << xml_escape(run.study) << "</h1>\n<p>Input <code>" << xml_escape(run.input)
    << "</code> (" << xml_escape(run.input_kind) << ", " << run.nx << " &times; " << run.ny << " &times; " << run.nz
    << ", spacing " << number(run.spacing[0]) << " &times; " << number(run.spacing[1]) << " &times; "
    << number(run.spacing[2]) << " mm" << (run.spacing_known ? "" : " assumed: pictures carry no spacing")
    << ").</p>\n";
  for (const std::string& w : run.warnings) o << "<p><strong>Warning:</strong> " << xml_escape(w) << ".</p>\n";
  o << "<table><tr><th></th><th>opacity</th><th>high opacity</th><th>lesion (mL)</th><th>lung (mL)</th></tr>\n";
  const std::pair<const char*, const LungFigures*> rows[] = {{"both lungs", &f.both}, {"left lung", &f.left},
                                                             {"right lung", &f.right}};
  for (const auto& [name, lung] : rows)
    o << "<tr><th>" << name << "</th><td>" << percent(lung->opacity_percent) << "</td><td>"
      << (f.high_opacity_known ? percent(lung->high_opacity_percent) : std::string("n/a")) << "</td><td>"
      << number(lung->lesion_ml) << "</td><td>" << number(lung->lung_ml) << "</td></tr>\n";
  o << "</table>\n<p>Opacity: lesion volume over lung volume. High opacity: the lesion's voxels at "
    << number(kHighOpacityMinHu) << " HU or more (consolidation-range, not ground glass) over lung volume"
    << (f.high_opacity_known ? "." : "; n/a: the input is not in Hounsfield units.") << "</p>\n<p>"
    << f.infected_slices << " of " << f.slices.size()
    << " slices infected (lesions over more than " << number(100 * kInfectedSliceRate) << "% of the slice's lung); "
    << run.slices_segmented << " slices hold lung.";
  if (const double ci = f.mean_certainty_index(); !std::isnan(ci))
    o << " Mean certainty index " << number(ci)
      << " (per slice with a lesion probability above " << number(kPaperCertaintyCutoff)
      << ", their mean: how sure the network is of what it marked; lower on images unlike its training set).";
  o << "</p>\n";
  o << "<h2>Infection rate per slice</h2>\n<img src=\"infection_rate.png\" alt=\"infection rate per slice\">\n"
    << "<p>Bars: lesion area over lung area per slice, slice 0 at the left"
    << (run.first_slice.empty() ? std::string()
                                : std::string(" (the most ") + run.first_slice + ": " +
                                      (run.first_slice == "inferior" ? "feet on the left, head on the right)"
                                                                     : "head on the left, feet on the right)"))
    << ". Red: infected" << (f.high_opacity_known ? "; dark at the foot of a bar: its high-opacity part" : "")
    << ". y axis 0 to "
    << percent(100 * plot_max_rate(f)) << ", grid every fifth; dashed line: " << percent(100 * kInfectedSliceRate)
    << ".</p>\n";
  o << "<h2>Most affected slices</h2>\n";
  if (shown.empty()) {
    o << "<p>No lesion found.</p>\n";
  } else {
    o << "<img src=\"most_affected.png\" alt=\"most affected slices\">\n<p>Slices";
    for (int64_t z : shown) o << ' ' << z << " (" << percent(100 * f.slices[z].infection_rate) << ")";
    o << ", left to right, top to bottom. Radiological display: the patient's right on the picture's left. "
         "Red: lesion; green: right lung; blue: left lung.</p>\n";
  }
  o << "<h2>Run</h2>\n<p>Weights <code>" << xml_escape(run.weights) << "</code> (FNV-1a " << run.weights_fnv1a64
    << ", " << xml_escape(run.architecture) << ", width " << number(run.width) << (run.cpb ? "" : ", no CPB")
    << (run.se ? "" : ", no SE") << ", input " << run.size << ") on "
    << xml_escape(run.device) << " in " << xml_escape(run.precision) << ", threshold " << number(run.threshold)
    << ". Read " << number(run.read_s)
    << " s, lungs " << number(run.lungs_s) << " s, network " << number(run.network_s) << " s, writing "
    << number(run.write_s) << " s, total " << number(run.total_s) << " s.";
  if (run.peak_resident_mib >= 0) o << " Peak memory " << number(std::round(run.peak_resident_mib)) << " MiB resident";
  if (run.device_peak_mib >= 0) o << ", " << number(std::round(run.device_peak_mib)) << " MiB on the device";
  if (run.peak_resident_mib >= 0 || run.device_peak_mib >= 0) o << ".";
  o << "</p>\n<p>Research software, not a medical device.</p>\n</body></html>\n";
  return o.str();
}

}  // namespace covidrate::data
