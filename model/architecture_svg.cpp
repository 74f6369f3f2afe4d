#include "model/architecture_svg.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>
#include <vector>

#include "nn/error.h"
#include "nn/text_file.h"

namespace covidrate {

namespace {

// Geometry, in SVG pixels. The gap left of each column carries the skip
// connections that run down it.
constexpr double kBoxW = 178, kBoxH = 50;
constexpr double kGap = 52;  // between columns, and left of the first
constexpr double kColumn = kBoxW + kGap, kRow = 66;
constexpr double kTop = 112;  // first row; above: title, legend, column heads

// Box fills by what a stage does to the resolution of its main input.
constexpr const char* kDownFill = "#d6e6f5";  // finer -> coarser: encoder
constexpr const char* kSameFill = "#dcefd6";
constexpr const char* kUpFill = "#fbe0c4";  // coarser -> finer: decoder
constexpr const char* kImageFill = "#ffffff";

std::string count_text(int64_t n) {
  char buf[32];
  if (n < 1000) std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
  else if (n < 1000000) std::snprintf(buf, sizeof buf, "%.1f k", n / 1e3);
  else std::snprintf(buf, sizeof buf, "%.2f M", n / 1e6);
  return buf;
}

std::string with_commas(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// A node of the drawing: the image or a stage, where it sits.
struct Node {
  std::string name, first_line, operation, cost;
  const char* fill = kImageFill;
  int row = 0, column = 0;
  double x() const { return kGap + column * kColumn; }  // left edge
  double y() const { return kTop + row * kRow; }        // top edge
  double cx() const { return x() + kBoxW / 2; }
  double cy() const { return y() + kBoxH / 2; }
};

// Where the line from a's centre to b's centre leaves box a.
std::pair<double, double> border_towards(const Node& a, const Node& b) {
  const double dx = b.cx() - a.cx(), dy = b.cy() - a.cy();
  const double tx = dx == 0 ? 1e30 : (kBoxW / 2) / std::abs(dx);
  const double ty = dy == 0 ? 1e30 : (kBoxH / 2) / std::abs(dy);
  const double t = std::min(tx, ty);
  return {a.cx() + t * dx, a.cy() + t * dy};
}

}  // namespace

std::string architecture_svg(const SegmentationNet& net, int64_t size) {
  const std::vector<StageSummary> rows = net.summary(size, size);  // checks the size

  // The nodes: the image, then the stages in the order they are computed.
  std::vector<Node> nodes;
  std::map<std::string, size_t> index;
  Node image;
  image.name = kImageInput;
  image.first_line = std::string(kImageInput) + "  1 x " + std::to_string(size) + " x " + std::to_string(size);
  image.operation = "one CT slice";
  nodes.push_back(image);
  index[kImageInput] = 0;
  int max_row = 0, max_column = 0;
  for (const StageSummary& r : rows) {
    Node n;
    n.name = r.name;
    n.first_line = r.name + "  " + r.output_text();
    n.operation = r.operation;
    char cost[64];
    std::snprintf(cost, sizeof cost, "%s params, %.2f GFLOP", count_text(r.parameters).c_str(), r.flops / 1e9);
    n.cost = cost;
    CR_CHECK(r.output[1] > 0 && size % r.output[1] == 0 && std::has_single_bit(static_cast<uint64_t>(size / r.output[1])),
             "architecture_svg: stage " << r.name << " is " << r.output[1] << " high in a " << size << " slice");
    n.column = std::countr_zero(static_cast<uint64_t>(size / r.output[1]));
    for (const std::string& input : r.inputs) {
      const auto at = index.find(input);
      CR_CHECK(at != index.end(), "architecture_svg: stage " << r.name << " reads unknown '" << input << "'");
      n.row = std::max(n.row, nodes[at->second].row + 1);
    }
    CR_CHECK(!r.inputs.empty(), "architecture_svg: stage " << r.name << " reads nothing");
    const int from = nodes[index.at(r.inputs.front())].column;
    n.fill = n.column > from ? kDownFill : n.column < from ? kUpFill : kSameFill;
    max_row = std::max(max_row, n.row);
    max_column = std::max(max_column, n.column);
    index[r.name] = nodes.size();
    nodes.push_back(n);
  }

  const double width = kGap + (max_column + 1) * kColumn;
  const double height = kTop + (max_row + 1) * kRow;
  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height << "' viewBox='0 0 "
      << width << " " << height << "' font-family='sans-serif' font-size='12'>\n";
  svg << "<defs><marker id='arrow' viewBox='0 0 10 10' refX='10' refY='5' markerWidth='7' markerHeight='7' "
         "orient='auto'><path d='M0,0 L10,5 L0,10 z' fill='#444'/></marker></defs>\n";
  svg << "<rect width='100%' height='100%' fill='white'/>\n";

  // Title, the whole network's figures, the legend.
  char figures[160];
  std::snprintf(figures, sizeof figures, "%s parameters, %.1f GFLOP per %lld x %lld slice",
                with_commas(net.param_count()).c_str(), net.forward_flops(size, size) / 1e9,
                static_cast<long long>(size), static_cast<long long>(size));
  svg << "<text x='" << kGap << "' y='24' font-size='16' font-weight='bold'>" << xml_escape(describe(net.config()))
      << "</text>\n";
  svg << "<text x='" << kGap << "' y='42'>" << figures
      << "; rows: order of computation, columns: resolution</text>\n";
  double lx = kGap;
  const double ly = 62;
  svg << "<line x1='" << lx << "' y1='" << ly << "' x2='" << lx + 30 << "' y2='" << ly
      << "' stroke='#444' stroke-width='1.5'/><text x='" << lx + 36 << "' y='" << ly + 4 << "'>main path</text>\n";
  lx += 120;
  svg << "<line x1='" << lx << "' y1='" << ly << "' x2='" << lx + 30 << "' y2='" << ly
      << "' stroke='#444' stroke-width='1.5' stroke-dasharray='5,3'/><text x='" << lx + 36 << "' y='" << ly + 4
      << "'>skip connection (concatenated)</text>\n";
  lx += 250;
  for (const auto& [fill, what] : {std::pair{kDownFill, "halves the resolution"}, {kSameFill, "keeps it"},
                                   {kUpFill, "doubles it"}}) {
    svg << "<rect x='" << lx << "' y='" << ly - 8 << "' width='16' height='16' rx='3' fill='" << fill
        << "' stroke='#666'/><text x='" << lx + 22 << "' y='" << ly + 4 << "'>" << what << "</text>\n";
    lx += 50 + 7.0 * std::string(what).size();
  }
  for (int c = 0; c <= max_column; ++c) {
    const int64_t side = size >> c;
    svg << "<text x='" << kGap + c * kColumn + kBoxW / 2 << "' y='" << kTop - 14
        << "' text-anchor='middle' fill='#555'>" << side << " x " << side << "</text>\n";
  }

  // Edges under the boxes. A skip down its own column over more than one row
  // runs in the gap left of the column, one lane per edge (the shortest
  // innermost) so that none hides another.
  struct Edge {
    size_t from, to;
    bool skip;
  };
  std::vector<Edge> edges;
  for (size_t i = 1; i < nodes.size(); ++i) {
    const StageSummary& r = rows[i - 1];
    for (size_t k = 0; k < r.inputs.size(); ++k) edges.push_back({index.at(r.inputs[k]), i, k > 0});
  }
  std::map<int, std::vector<size_t>> lanes;  // column -> its long same-column edges
  for (size_t e = 0; e < edges.size(); ++e) {
    const Node &a = nodes[edges[e].from], &b = nodes[edges[e].to];
    if (a.column == b.column && b.row - a.row > 1) lanes[a.column].push_back(e);
  }
  std::map<size_t, double> lane_offset;
  for (auto& [column, list] : lanes) {
    std::stable_sort(list.begin(), list.end(), [&](size_t p, size_t q) {
      return nodes[edges[p].to].row - nodes[edges[p].from].row < nodes[edges[q].to].row - nodes[edges[q].from].row;
    });
    for (size_t k = 0; k < list.size(); ++k) lane_offset[list[k]] = std::min(kGap - 6, 10 + 7.0 * k);
  }
  for (size_t e = 0; e < edges.size(); ++e) {
    const Node &a = nodes[edges[e].from], &b = nodes[edges[e].to];
    svg << "<path class='edge' data-from='" << xml_escape(a.name) << "' data-to='" << xml_escape(b.name) << "' d='";
    if (lane_offset.count(e)) {
      const double lane = a.x() - lane_offset[e];
      svg << "M" << a.x() << "," << a.cy() << " H" << lane << " V" << b.cy() << " H" << b.x();
    } else {
      const auto [x0, y0] = border_towards(a, b);
      const auto [x1, y1] = border_towards(b, a);
      svg << "M" << x0 << "," << y0 << " L" << x1 << "," << y1;
    }
    svg << "' fill='none' stroke='#444' stroke-width='1.5'" << (edges[e].skip ? " stroke-dasharray='5,3'" : "")
        << " marker-end='url(#arrow)'/>\n";
  }

  for (const Node& n : nodes) {
    svg << "<g class='stage' data-name='" << xml_escape(n.name) << "'>";
    svg << "<rect x='" << n.x() << "' y='" << n.y() << "' width='" << kBoxW << "' height='" << kBoxH
        << "' rx='5' fill='" << n.fill << "' stroke='#666'/>";
    const std::string rest = n.first_line.substr(n.name.size());
    svg << "<text x='" << n.x() + 7 << "' y='" << n.y() + 15 << "'><tspan font-weight='bold'>" << xml_escape(n.name)
        << "</tspan>" << xml_escape(rest) << "</text>";
    svg << "<text x='" << n.x() + 7 << "' y='" << n.y() + 30 << "' font-size='10.5'>" << xml_escape(n.operation)
        << "</text>";
    if (!n.cost.empty())
      svg << "<text x='" << n.x() + 7 << "' y='" << n.y() + 44 << "' font-size='10.5' fill='#555'>"
          << xml_escape(n.cost) << "</text>";
    svg << "</g>\n";
  }
  svg << "</svg>\n";
  return svg.str();
}

void save_architecture_svg(const std::string& path, const SegmentationNet& net, int64_t size) {
  write_text_atomically(path, architecture_svg(net, size));
}

}  // namespace covidrate
