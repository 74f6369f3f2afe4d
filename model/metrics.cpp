#include "model/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "nn/error.h"
#include "nn/json.h"

namespace covidrate::metrics {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double ratio_or_one(int64_t num, int64_t den) {
  // An empty denominator means there was nothing to get wrong: a perfect score.
  return den == 0 ? 1.0 : static_cast<double>(num) / static_cast<double>(den);
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

void append_distribution(std::ostringstream& os, const Distribution& d) {
  os << "{\"mean\": " << json_number(d.mean) << ", \"std\": " << json_number(d.std)
     << ", \"median\": " << json_number(d.median) << ", \"q1\": " << json_number(d.q1)
     << ", \"q3\": " << json_number(d.q3) << "}";
}

void append_metric_set(std::ostringstream& os, const MetricSet& m) {
  os << "{\"images\": " << m.images << ", \"dice\": ";
  append_distribution(os, m.dice);
  os << ", \"sensitivity\": ";
  append_distribution(os, m.sensitivity);
  os << ", \"specificity\": ";
  append_distribution(os, m.specificity);
  os << ", \"mae\": ";
  append_distribution(os, m.mae);
  os << "}";
}

MetricSet metric_set(const std::vector<const ImageMetrics*>& images) {
  std::vector<double> dice, sens, spec, mae;
  for (const ImageMetrics* m : images) {
    dice.push_back(m->dice);
    sens.push_back(m->sensitivity);
    spec.push_back(m->specificity);
    mae.push_back(m->mae);
  }
  MetricSet s;
  s.images = static_cast<int64_t>(images.size());
  s.dice = describe(dice);
  s.sensitivity = describe(sens);
  s.specificity = describe(spec);
  s.mae = describe(mae);
  return s;
}

}  // namespace

double dice(const Confusion& c) {
  // Both masks empty: the prediction agrees with the truth exactly, Dice 1.
  // One empty: 2TP = 0 over a positive count, Dice 0, which the formula gives.
  return c.tp + c.fp + c.fn == 0 ? 1.0 : 2.0 * c.tp / static_cast<double>(2 * c.tp + c.fp + c.fn);
}
double sensitivity(const Confusion& c) { return ratio_or_one(c.tp, c.tp + c.fn); }
double specificity(const Confusion& c) { return ratio_or_one(c.tn, c.tn + c.fp); }

ImageMetrics score_image(const float* probability, const uint8_t* truth, int64_t n, double threshold,
                         const uint8_t* lung) {
  CR_CHECK(n > 0, "metrics: an image needs at least one pixel");
  CR_CHECK(threshold >= 0 && threshold < 1, "metrics: threshold " << threshold << " is outside [0, 1)");
  ImageMetrics m;
  Confusion& c = m.confusion;
  double abs_error = 0;
  int64_t lung_pixels = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float p = probability[i];
    CR_CHECK(p >= 0.f && p <= 1.f, "metrics: probability " << p << " at pixel " << i << " is outside [0, 1]");
    const bool positive = p > threshold;
    const bool lesion = truth[i] != 0;
    c.tp += positive && lesion;
    c.fp += positive && !lesion;
    c.fn += !positive && lesion;
    c.tn += !positive && !lesion;
    abs_error += std::abs(static_cast<double>(p) - (lesion ? 1.0 : 0.0));
    if (lung) lung_pixels += lung[i] != 0;
  }
  m.dice = dice(c);
  m.sensitivity = sensitivity(c);
  m.specificity = specificity(c);
  m.mae = abs_error / static_cast<double>(n);
  // Lesions that the lung mask misses (consolidation at the pleura) still
  // count, so the rate is capped at 1.
  const int64_t area = lung_pixels > 0 ? lung_pixels : n;
  m.infection_rate = std::min(1.0, static_cast<double>(c.tp + c.fn) / static_cast<double>(area));
  return m;
}

LesionGroup lesion_group(double infection_rate) {
  return infection_rate < kLargeLesionRate ? LesionGroup::Small : LesionGroup::Large;
}

const char* group_name(LesionGroup g) { return g == LesionGroup::Small ? "A (small)" : "B (large)"; }

double quantile(std::vector<double> values, double q) {
  CR_CHECK(q >= 0 && q <= 1, "quantile: q = " << q << " is outside [0, 1]");
  if (values.empty()) return kNaN;
  std::sort(values.begin(), values.end());
  const double h = static_cast<double>(values.size() - 1) * q;
  const size_t lo = static_cast<size_t>(std::floor(h));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (h - static_cast<double>(lo)) * (values[hi] - values[lo]);
}

Distribution describe(const std::vector<double>& values) {
  Distribution d;
  d.count = static_cast<int64_t>(values.size());
  if (values.empty()) {
    d.mean = d.std = d.median = d.q1 = d.q3 = kNaN;
    return d;
  }
  double sum = 0;
  for (double v : values) sum += v;
  d.mean = sum / static_cast<double>(values.size());
  double squares = 0;
  for (double v : values) squares += (v - d.mean) * (v - d.mean);
  d.std = std::sqrt(squares / static_cast<double>(values.size()));
  d.median = quantile(values, 0.5);
  d.q1 = quantile(values, 0.25);
  d.q3 = quantile(values, 0.75);
  return d;
}

Summary summarize(const std::vector<ImageMetrics>& images) {
  std::vector<const ImageMetrics*> all, small, large;
  for (const ImageMetrics& m : images) {
    all.push_back(&m);
    (lesion_group(m.infection_rate) == LesionGroup::Small ? small : large).push_back(&m);
  }
  return Summary{metric_set(all), metric_set(small), metric_set(large)};
}

std::string format_table(const Summary& s) {
  std::ostringstream os;
  char line[160];
  std::snprintf(line, sizeof line, "%-12s %-10s %6s  %-17s  %s\n", "metric", "group", "images", "mean ± std",
                "median [Q1, Q3]");
  os << line;
  const struct {
    const char* name;
    Distribution MetricSet::*field;
  } metrics[] = {{"dice", &MetricSet::dice},
                 {"sensitivity", &MetricSet::sensitivity},
                 {"specificity", &MetricSet::specificity},
                 {"mae", &MetricSet::mae}};
  const struct {
    const char* name;
    const MetricSet* set;
  } groups[] = {{"all", &s.overall}, {group_name(LesionGroup::Small), &s.small},
                {group_name(LesionGroup::Large), &s.large}};
  for (const auto& metric : metrics) {
    for (const auto& group : groups) {
      const Distribution& d = group.set->*metric.field;
      if (d.count == 0) {
        std::snprintf(line, sizeof line, "%-12s %-10s %6d  %s\n", metric.name, group.name, 0, "-");
      } else {
        std::snprintf(line, sizeof line, "%-12s %-10s %6lld  %.4f ± %.4f    %.4f [%.4f, %.4f]\n", metric.name,
                      group.name, static_cast<long long>(d.count), d.mean, d.std, d.median, d.q1, d.q3);
      }
      os << line;
    }
  }
  std::snprintf(line, sizeof line,
                "images: %lld, group A (infection rate < %.3f): %lld, group B: %lld\n",
                static_cast<long long>(s.overall.images), kLargeLesionRate, static_cast<long long>(s.small.images),
                static_cast<long long>(s.large.images));
  os << line;
  return os.str();
}

std::string to_json(const Summary& s, const std::vector<ImageMetrics>& images, double threshold) {
  std::ostringstream os;
  os << "{\n  \"threshold\": " << json_number(threshold) << ",\n  \"large_lesion_rate\": "
     << json_number(kLargeLesionRate) << ",\n  \"overall\": ";
  append_metric_set(os, s.overall);
  os << ",\n  \"group_a\": ";
  append_metric_set(os, s.small);
  os << ",\n  \"group_b\": ";
  append_metric_set(os, s.large);
  os << ",\n  \"images\": [";
  for (size_t i = 0; i < images.size(); ++i) {
    const ImageMetrics& m = images[i];
    const Confusion& c = m.confusion;
    os << (i ? ",\n" : "\n") << "    {\"name\": " << json::quote(m.name) << ", \"group\": \""
       << (lesion_group(m.infection_rate) == LesionGroup::Small ? "A" : "B")
       << "\", \"infection_rate\": " << json_number(m.infection_rate) << ", \"dice\": " << json_number(m.dice)
       << ", \"sensitivity\": " << json_number(m.sensitivity) << ", \"specificity\": "
       << json_number(m.specificity) << ", \"mae\": " << json_number(m.mae) << ", \"tp\": " << c.tp
       << ", \"fp\": " << c.fp << ", \"tn\": " << c.tn << ", \"fn\": " << c.fn << "}";
  }
  os << (images.empty() ? "]\n}\n" : "\n  ]\n}\n");
  return os.str();
}

}  // namespace covidrate::metrics
