// The stage graph each architecture declares (StageSummary::inputs) and the
// picture drawn from it (model/architecture_svg.h, `covidrate model --svg`).
// The graph is declared beside each network's forward pass, not traced from
// it, so the first test holds it against the layers themselves: a stage that
// named a wrong skip would have no convolution reading that many channels.
#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "model/architecture_svg.h"
#include "model/segmentation_net.h"
#include "tests/support/run_covidrate.h"
#include "tests/temp_files.h"

using namespace covidrate;
namespace fs = std::filesystem;

namespace {

std::vector<NetConfig> every_architecture() {
  std::vector<NetConfig> configs;
  for (const Architecture a :
       {Architecture::CovidRate, Architecture::UNet, Architecture::AttentionUNet, Architecture::UNetPlusPlus}) {
    NetConfig c;
    c.architecture = a;
    c.width = 0.25;
    configs.push_back(c);
  }
  NetConfig no_cpb;
  no_cpb.width = 0.25;
  no_cpb.cpb = false;
  configs.push_back(no_cpb);
  NetConfig no_se = no_cpb;
  no_se.cpb = true;
  no_se.se = false;
  configs.push_back(no_se);
  return configs;
}

struct ConvShape {
  int64_t out, in;
};

// The stage's convolutions (4-D weights), in the order they were created.
std::vector<ConvShape> convolutions_of(const SegmentationNet& net, const std::string& stage) {
  std::vector<ConvShape> convs;
  for (const auto& p : net.parameters().parameters()) {
    const Shape& s = p.var.value().shape();
    if (p.name.rfind(stage + ".", 0) == 0 && p.name.ends_with(".weight") && s.rank() == 4)
      convs.push_back({s[0], s[1]});
  }
  return convs;
}

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

// The value of attribute `name` in the tag that starts at `at`.
std::string attribute(const std::string& svg, size_t at, const std::string& name) {
  const size_t begin = svg.find(" " + name + "='", at) + name.size() + 3;
  return svg.substr(begin, svg.find('\'', begin) - begin);
}

}  // namespace

TEST_CASE("model summary: each architecture's stages lead from the image to the head, as its layers read them") {
  for (const NetConfig& config : every_architecture()) {
    CAPTURE(describe(config));
    const std::unique_ptr<SegmentationNet> net = make_network(config);
    const std::vector<StageSummary> rows = net->summary(256, 256);
    std::map<std::string, Shape> seen{{kImageInput, Shape{1, 256, 256}}};
    std::set<std::string> read;
    for (const StageSummary& r : rows) {
      CAPTURE(r.name);
      REQUIRE(!r.inputs.empty());
      CHECK(!r.operation.empty());
      int64_t all_inputs = 0;
      for (size_t k = 0; k < r.inputs.size(); ++k) {
        REQUIRE_MESSAGE(seen.count(r.inputs[k]), r.inputs[k] << " is not an earlier stage");
        const Shape& in = seen.at(r.inputs[k]);
        all_inputs += in[0];
        read.insert(r.inputs[k]);
        // The main path may change the resolution by 2x; a skip joins a map of the stage's own size.
        const int64_t ratio = std::max(in[1], r.output[1]) / std::min(in[1], r.output[1]);
        if (k == 0) CHECK((ratio == 1 || ratio == 2));
        else CHECK(in[1] == r.output[1]);
      }
      const std::vector<ConvShape> convs = convolutions_of(*net, r.name);
      REQUIRE(!convs.empty());
      // The first convolution reads the main input, or the concatenation of them all (U-Net++).
      const int64_t main = seen.at(r.inputs[0])[0];
      CHECK((convs[0].in == main || convs[0].in == all_inputs));
      for (size_t k = 1; k < r.inputs.size(); ++k) {
        const int64_t skip = seen.at(r.inputs[k])[0];
        // Read by a convolution of its own (COVID-Rate's transition, the attention gate), joined
        // to the first convolution's output (U-Net), or in the concatenation of all (U-Net++).
        bool found = convs[0].in == all_inputs;
        for (const ConvShape& c : convs) found = found || c.in == skip || c.in == skip + convs[0].out;
        CHECK_MESSAGE(found, "no convolution of " << r.name << " reads " << r.inputs[k] << "'s " << skip
                                                  << " channels");
      }
      seen[r.name] = r.output;
    }
    REQUIRE(rows.back().name == "head");
    CHECK(rows.back().inputs == std::vector<std::string>{rows[rows.size() - 2].name});
    for (const StageSummary& r : rows)
      if (r.name != "head") CHECK_MESSAGE(read.count(r.name), r.name << " is read by no stage");
  }
  // The skips of the paper's network, which docs/model.md's table states.
  NetConfig paper;
  const std::unique_ptr<SegmentationNet> net = make_network(paper);
  std::map<std::string, std::vector<std::string>> inputs;
  for (const StageSummary& r : net->summary(512, 512)) inputs[r.name] = r.inputs;
  CHECK(inputs["dec1"] == std::vector<std::string>{"cpb", "enc3"});
  CHECK(inputs["dec4"] == std::vector<std::string>{"dec3", "stem"});
}

TEST_CASE("architecture picture: a box per stage, an edge per input, none on another") {
  for (const NetConfig& config : every_architecture()) {
    CAPTURE(describe(config));
    const std::unique_ptr<SegmentationNet> net = make_network(config);
    const std::vector<StageSummary> rows = net->summary(128, 128);
    const std::string svg = architecture_svg(*net, 128);
    CHECK(svg.rfind("<svg xmlns='http://www.w3.org/2000/svg'", 0) == 0);
    CHECK(svg.ends_with("</svg>\n"));
    CHECK(svg.find("nan") == std::string::npos);
    CHECK(svg.find("inf") == std::string::npos);
    CHECK(count(svg, "<g ") == count(svg, "</g>"));
    CHECK(count(svg, "<text") == count(svg, "</text>"));
    CHECK(count(svg, "<tspan") == count(svg, "</tspan>"));
    CHECK(svg.find(describe(config)) != std::string::npos);

    // Boxes: the image's and one per stage, inside the picture, no two in one place.
    const double width = std::stod(attribute(svg, 0, "width")), height = std::stod(attribute(svg, 0, "height"));
    std::set<std::pair<double, double>> corners;
    std::vector<std::string> names;
    for (size_t at = svg.find("<g class='stage'"); at != std::string::npos; at = svg.find("<g class='stage'", at + 1)) {
      names.push_back(attribute(svg, at, "data-name"));
      const size_t rect = svg.find("<rect", at);
      const double x = std::stod(attribute(svg, rect, "x")), y = std::stod(attribute(svg, rect, "y"));
      CHECK(x >= 0);
      CHECK(x + std::stod(attribute(svg, rect, "width")) <= width);
      CHECK(y + std::stod(attribute(svg, rect, "height")) <= height);
      CHECK_MESSAGE(corners.insert({x, y}).second, names.back() << " sits on another box");
    }
    REQUIRE(names.size() == rows.size() + 1);
    CHECK(names[0] == kImageInput);
    for (size_t i = 0; i < rows.size(); ++i) CHECK(names[i + 1] == rows[i].name);

    // Edges: exactly the declared inputs, the skips dashed.
    std::multiset<std::pair<std::string, std::string>> drawn, declared;
    int dashed = 0, skips = 0;
    for (size_t at = svg.find("<path class='edge'"); at != std::string::npos;
         at = svg.find("<path class='edge'", at + 1)) {
      drawn.insert({attribute(svg, at, "data-from"), attribute(svg, at, "data-to")});
      dashed += svg.substr(at, svg.find("/>", at) - at).find("stroke-dasharray") != std::string::npos;
    }
    for (const StageSummary& r : rows) {
      for (const std::string& in : r.inputs) declared.insert({in, r.name});
      skips += static_cast<int>(r.inputs.size()) - 1;
    }
    CHECK(drawn == declared);
    CHECK(dashed == skips);
  }
}

TEST_CASE("covidrate model --svg: the picture beside the table; a bad path or a missing value is refused") {
  test::TempDir dir;
  test::ProgramRun run = test::run_covidrate(dir, "model --svg " + dir.file("net.svg"));
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.out.find("dec1    512 x 64 x 64") != std::string::npos);
  CHECK(run.out.find("cpb, enc3") != std::string::npos);  // the table's "reads" column
  const std::string svg = test::read_text_file(dir.file("net.svg"));
  CHECK(svg.find("COVID-Rate, width 1") != std::string::npos);
  CHECK(svg.find("14,380,833 parameters, 306.6 GFLOP per 512 x 512 slice") != std::string::npos);

  run = test::run_covidrate(dir, "model --arch unet++ --size 64 --json --svg " + dir.file("upp.svg"));
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  CHECK(run.out.find("\"name\": \"x0_4\", \"output\": [32, 64, 64]") != std::string::npos);
  CHECK(run.out.find("\"inputs\": [\"x1_3\", \"x0_0\", \"x0_1\", \"x0_2\", \"x0_3\"]") != std::string::npos);
  CHECK(fs::exists(dir.file("upp.svg")));

  run = test::run_covidrate(dir, "model --svg " + dir.file("no/such/folder/net.svg"));
  CHECK(run.exit_code == 1);
  CHECK(run.err.find("no/such/folder/net.svg") != std::string::npos);
  CHECK(run.out.empty());  // no table that looks like success
  run = test::run_covidrate(dir, "model --svg");
  CHECK(run.exit_code == 2);
  CHECK(run.err.find("--svg") != std::string::npos);
}
