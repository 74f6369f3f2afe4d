// Segmentation metrics of the COVID-Rate paper, computed per image and then
// summarized over a test set: mean, std, median and quartiles, overall and per
// lesion-size group (the paper's boxplots). docs/metrics.md gives every
// definition, the empty cases and the quartile interpolation.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace covidrate::metrics {

// Pixel counts of a thresholded prediction against the ground truth.
struct Confusion {
  int64_t tp = 0, fp = 0, tn = 0, fn = 0;
};

// Scores of one image. All lie in [0, 1].
struct ImageMetrics {
  std::string name;
  double dice = 0;         // 2TP / (2TP + FP + FN); 1 when both masks are empty
  double sensitivity = 0;  // TP / (TP + FN); 1 when the truth has no lesion pixel
  double specificity = 0;  // TN / (TN + FP); 1 when the truth has no background pixel
  double mae = 0;          // mean |p - y| over the image, p the probability map (not thresholded)
  double infection_rate = 0;  // ground-truth lesion pixels / lung pixels (see below)
  Confusion confusion;
};

// Scores `n` pixels. probability: the network's output in [0, 1]; truth: 0 or
// non-zero (lesion); a pixel is predicted positive when probability > threshold.
// lung: optional lung mask (non-zero = lung) for the infection rate; when it is
// null or holds no lung pixel the rate is taken over the whole image.
ImageMetrics score_image(const float* probability, const uint8_t* truth, int64_t n, double threshold,
                         const uint8_t* lung = nullptr);

// Scores from the counts alone, with the empty cases above.
double dice(const Confusion& c);
double sensitivity(const Confusion& c);
double specificity(const Confusion& c);

// The paper's split of test images by infection rate: group A (small lesions)
// below 1.5% of the lung, group B (large lesions) at or above it.
inline constexpr double kLargeLesionRate = 0.015;
enum class LesionGroup { Small, Large };
LesionGroup lesion_group(double infection_rate);
const char* group_name(LesionGroup g);  // "A (small)" / "B (large)"

// Distribution of one metric over a set of images. For an empty set count is
// 0 and every statistic is NaN.
struct Distribution {
  int64_t count = 0;
  double mean = 0, std = 0;        // std: population (divides by count)
  double median = 0, q1 = 0, q3 = 0;
};
// Quantile q in [0, 1] of `values` by linear interpolation between order
// statistics: position h = (n - 1) q, value x[floor h] + (h - floor h)(x[floor h + 1] - x[floor h])
// (Hyndman-Fan type 7, the default of NumPy and R). values need not be sorted.
double quantile(std::vector<double> values, double q);
Distribution describe(const std::vector<double>& values);

// The four metrics' distributions over one set of images.
struct MetricSet {
  int64_t images = 0;
  Distribution dice, sensitivity, specificity, mae;
};
struct Summary {
  MetricSet overall, small, large;  // small = group A, large = group B
};
Summary summarize(const std::vector<ImageMetrics>& images);

// A fixed-width text table: one row per metric and group with mean ± std and
// median [Q1, Q3], then the image count per group.
std::string format_table(const Summary& s);
// The same as a JSON object, with every image's scores under "images".
// NaN (an empty group) is written as null.
std::string to_json(const Summary& s, const std::vector<ImageMetrics>& images, double threshold);

}  // namespace covidrate::metrics
