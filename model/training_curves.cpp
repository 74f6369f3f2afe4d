#include "model/training_curves.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <sstream>

#include "nn/error.h"
#include "nn/text_file.h"

namespace covidrate {

namespace {

constexpr int kWidth = 900, kHeight = 330;
constexpr double kTop = 48, kBottom = 280;  // plot area, both panels
constexpr const char* kTrainColour = "#1f77b4";
constexpr const char* kValColour = "#ff7f0e";
constexpr const char* kDiceColour = "#2ca02c";

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

// A step of 1, 2 or 5 times a power of ten that cuts `range` into about `parts`.
double nice_step(double range, int parts) {
  if (!(range > 0)) return 1;
  const double raw = range / parts;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double m : {1.0, 2.0, 5.0, 10.0})
    if (m * magnitude >= raw) return m * magnitude;
  return 10 * magnitude;
}

// One panel: x from epoch x0 to x1 over [left, right], y from 0 to y_max.
struct Panel {
  double left, right, x0, x1, y_max;
  double x(double epoch) const { return left + (epoch - x0) / (x1 - x0) * (right - left); }
  double y(double value) const { return kBottom - value / y_max * (kBottom - kTop); }
};

// The axes, the grid, and the tick labels of a panel.
void axes(std::ostringstream& svg, const Panel& p, int epochs, double y_step, const std::string& y_label) {
  for (double v = 0; v <= p.y_max + 1e-9 * p.y_max; v += y_step) {
    svg << "<line x1='" << p.left << "' y1='" << p.y(v) << "' x2='" << p.right << "' y2='" << p.y(v)
        << "' stroke='#e4e4e4'/>\n";
    svg << "<text x='" << p.left - 6 << "' y='" << p.y(v) + 4 << "' text-anchor='end'>" << fmt(v) << "</text>\n";
  }
  const int x_step = std::max(1, static_cast<int>(std::lround(nice_step(epochs - 1, 6))));
  std::vector<int> ticks{1};
  for (int e = x_step; e <= epochs; e += x_step)
    if (e > 1) ticks.push_back(e);
  for (const int e : ticks) {
    svg << "<line x1='" << p.x(e) << "' y1='" << kBottom << "' x2='" << p.x(e) << "' y2='" << kBottom + 5
        << "' stroke='black'/>\n";
    svg << "<text x='" << p.x(e) << "' y='" << kBottom + 18 << "' text-anchor='middle'>" << e << "</text>\n";
  }
  svg << "<polyline points='" << p.left << "," << kTop << " " << p.left << "," << kBottom << " " << p.right << ","
      << kBottom << "' fill='none' stroke='black'/>\n";
  svg << "<text x='" << (p.left + p.right) / 2 << "' y='" << kBottom + 36 << "' text-anchor='middle'>epoch</text>\n";
  svg << "<text x='" << p.left << "' y='" << kTop - 10 << "'>" << y_label << "</text>\n";
}

// The finite values of one series as polylines (a gap breaks the line; a
// lone point is a dot). Returns whether anything was drawn.
bool series(std::ostringstream& svg, const Panel& p, const std::vector<EpochRecord>& epochs,
            const std::function<double(const EpochRecord&)>& value, const char* colour) {
  bool drawn = false;
  size_t i = 0;
  while (i < epochs.size()) {
    while (i < epochs.size() && !std::isfinite(value(epochs[i]))) ++i;
    size_t end = i;
    while (end < epochs.size() && std::isfinite(value(epochs[end]))) ++end;
    if (end == i + 1) {
      svg << "<circle cx='" << p.x(epochs[i].epoch) << "' cy='" << p.y(value(epochs[i])) << "' r='3' fill='" << colour
          << "'/>\n";
    } else if (end > i + 1) {
      svg << "<polyline fill='none' stroke-width='2' stroke='" << colour << "' points='";
      for (size_t k = i; k < end; ++k)
        svg << (k > i ? " " : "") << p.x(epochs[k].epoch) << "," << p.y(value(epochs[k]));
      svg << "'/>\n";
    }
    drawn = drawn || end > i;
    i = end;
  }
  return drawn;
}

// A legend entry in the panel's top right corner (loss falls away from it) or
// bottom right (Dice rises away from it).
void legend(std::ostringstream& svg, const Panel& p, bool top, int row, const char* colour, const std::string& label) {
  const double y = top ? kTop + 8 + 16 * row : kBottom - 12 - 16 * row, x = p.right - 150;
  svg << "<line x1='" << x << "' y1='" << y << "' x2='" << x + 18 << "' y2='" << y << "' stroke-width='2' stroke='"
      << colour << "'/>\n";
  svg << "<text x='" << x + 24 << "' y='" << y + 4 << "'>" << label << "</text>\n";
}

void best_marker(std::ostringstream& svg, const Panel& p, int best_epoch) {
  if (best_epoch <= 0) return;
  svg << "<line x1='" << p.x(best_epoch) << "' y1='" << kTop << "' x2='" << p.x(best_epoch) << "' y2='" << kBottom
      << "' stroke='#777' stroke-dasharray='4 3'/>\n";
}

}  // namespace

void save_training_curves(const std::string& path, const std::vector<EpochRecord>& epochs, int best_epoch) {
  write_text_atomically(path, training_curves_svg(epochs, best_epoch));
}

int best_epoch_of(const std::vector<EpochRecord>& epochs) {
  int best = 0;
  double best_loss = 0;
  for (const EpochRecord& r : epochs)
    if (std::isfinite(r.val_loss) && (best == 0 || r.val_loss < best_loss)) best = r.epoch, best_loss = r.val_loss;
  return best;
}

std::string training_curves_svg(const std::vector<EpochRecord>& epochs, int best_epoch) {
  CR_CHECK(!epochs.empty(), "training_curves_svg: no epochs to draw");
  for (size_t i = 1; i < epochs.size(); ++i)
    CR_CHECK(epochs[i].epoch > epochs[i - 1].epoch,
             "training_curves_svg: epoch " << epochs[i].epoch << " follows epoch " << epochs[i - 1].epoch);
  const int last = epochs.back().epoch;
  // One epoch: the point in the middle of the axis.
  const double x0 = last > 1 ? 1 : 0.5, x1 = last > 1 ? last : 1.5;

  double loss_max = 0;
  for (const EpochRecord& r : epochs)
    for (const double v : {r.train_loss, r.val_loss})
      if (std::isfinite(v)) loss_max = std::max(loss_max, v);
  const double loss_step = nice_step(loss_max, 5);
  const double loss_top = loss_max > 0 ? std::ceil(loss_max / loss_step) * loss_step : 1;
  const Panel loss{60, 430, x0, x1, loss_top};
  const Panel dice{510, 880, x0, x1, 1.0};

  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << kWidth << "' height='" << kHeight << "' viewBox='0 0 "
      << kWidth << " " << kHeight << "' font-family='sans-serif' font-size='12'>\n";
  svg << "<rect width='100%' height='100%' fill='white'/>\n";
  std::string title = "Training: " + std::to_string(epochs.size()) + (epochs.size() == 1 ? " epoch" : " epochs");
  const auto best = std::find_if(epochs.begin(), epochs.end(), [&](const EpochRecord& r) { return r.epoch == best_epoch; });
  if (best != epochs.end()) {
    title += "; best epoch " + std::to_string(best_epoch) + " (validation loss " + fmt(best->val_loss);
    if (std::isfinite(best->val_dice)) title += ", Dice " + fmt(best->val_dice);
    title += ")";
  }
  svg << "<text x='" << kWidth / 2 << "' y='18' text-anchor='middle' font-size='14'>" << title << "</text>\n";

  axes(svg, loss, last, loss_step, "loss");
  best_marker(svg, loss, best_epoch);
  series(svg, loss, epochs, [](const EpochRecord& r) { return r.train_loss; }, kTrainColour);
  const bool val = series(svg, loss, epochs, [](const EpochRecord& r) { return r.val_loss; }, kValColour);
  legend(svg, loss, true, 0, kTrainColour, "training");
  legend(svg, loss, true, 1, kValColour, val ? "validation" : "validation: none");

  axes(svg, dice, last, 0.2, "validation Dice (threshold 0.5)");
  best_marker(svg, dice, best_epoch);
  const bool has_dice = series(svg, dice, epochs, [](const EpochRecord& r) { return r.val_dice; }, kDiceColour);
  legend(svg, dice, false, 0, kDiceColour, has_dice ? "validation" : "no validation set");
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace covidrate
