// The paper's metrics on hand-computed cases: counts, empty masks, MAE on the
// probability map, quartile interpolation, the group split and the report.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "model/metrics.h"
#include "nn/error.h"
#include "nn/json.h"

using namespace covidrate;
using namespace covidrate::metrics;

namespace {
metrics::ImageMetrics score(const std::vector<float>& p, const std::vector<uint8_t>& y, double threshold = 0.5,
                            const std::vector<uint8_t>* lung = nullptr) {
  REQUIRE(p.size() == y.size());
  return score_image(p.data(), y.data(), static_cast<int64_t>(p.size()), threshold, lung ? lung->data() : nullptr);
}
}  // namespace

TEST_CASE("counts and scores of a small image") {
  // truth:      1 1 1 0 0 0 0 0
  // prediction: 1 1 0 1 0 0 0 0   (p > 0.5) -> TP 2, FN 1, FP 1, TN 4
  const std::vector<float> p{0.9f, 0.6f, 0.4f, 0.7f, 0.1f, 0.0f, 0.2f, 0.5f};
  const std::vector<uint8_t> y{1, 1, 1, 0, 0, 0, 0, 0};
  const ImageMetrics m = score(p, y);
  CHECK(m.confusion.tp == 2);
  CHECK(m.confusion.fn == 1);
  CHECK(m.confusion.fp == 1);
  CHECK(m.confusion.tn == 4);  // 0.5 is not above the threshold
  CHECK(m.dice == doctest::Approx(4.0 / 6.0));
  CHECK(m.sensitivity == doctest::Approx(2.0 / 3.0));
  CHECK(m.specificity == doctest::Approx(4.0 / 5.0));
  // |p - y|: 0.1 0.4 0.6 0.7 0.1 0 0.2 0.5 -> 2.6 / 8
  CHECK(m.mae == doctest::Approx(2.6 / 8).epsilon(1e-6));
  CHECK(m.infection_rate == doctest::Approx(3.0 / 8));
}

TEST_CASE("empty and full masks") {
  SUBCASE("both empty: Dice 1, sensitivity 1 (no positive pixel)") {
    const ImageMetrics m = score({0.1f, 0.2f, 0.0f, 0.3f}, {0, 0, 0, 0});
    CHECK(m.dice == 1.0);
    CHECK(m.sensitivity == 1.0);
    CHECK(m.specificity == 1.0);
    CHECK(m.mae == doctest::Approx(0.15));
    CHECK(m.infection_rate == 0.0);
  }
  SUBCASE("truth empty, prediction not: Dice 0, sensitivity 1") {
    const ImageMetrics m = score({0.9f, 0.2f, 0.0f, 0.3f}, {0, 0, 0, 0});
    CHECK(m.dice == 0.0);
    CHECK(m.sensitivity == 1.0);
    CHECK(m.specificity == doctest::Approx(0.75));
  }
  SUBCASE("prediction empty, truth not: Dice 0, sensitivity 0") {
    const ImageMetrics m = score({0.1f, 0.2f, 0.0f, 0.3f}, {1, 0, 0, 0});
    CHECK(m.dice == 0.0);
    CHECK(m.sensitivity == 0.0);
    CHECK(m.specificity == 1.0);
  }
  SUBCASE("all positive and all predicted: specificity 1 (no negative pixel)") {
    const ImageMetrics m = score({1.f, 1.f, 0.8f}, {1, 1, 255});
    CHECK(m.dice == 1.0);
    CHECK(m.sensitivity == 1.0);
    CHECK(m.specificity == 1.0);
    CHECK(m.mae == doctest::Approx(0.2 / 3));
    CHECK(m.infection_rate == 1.0);
  }
}

TEST_CASE("a perfect prediction: Dice 1, MAE 0") {
  const std::vector<uint8_t> y{0, 1, 1, 0, 0, 1};
  const std::vector<float> p(y.begin(), y.end());
  const ImageMetrics m = score(p, y);
  CHECK(m.dice == 1.0);
  CHECK(m.sensitivity == 1.0);
  CHECK(m.specificity == 1.0);
  CHECK(m.mae == 0.0);
}

TEST_CASE("infection rate over the lung, or over the image without lung") {
  const std::vector<float> p(10, 0.f);
  const std::vector<uint8_t> y{1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  const std::vector<uint8_t> lung{1, 1, 1, 1, 0, 0, 0, 0, 0, 0};
  const std::vector<uint8_t> no_lung(10, 0);
  CHECK(score(p, y, 0.5, &lung).infection_rate == doctest::Approx(0.25));
  CHECK(score(p, y, 0.5, &no_lung).infection_rate == doctest::Approx(0.1));
  CHECK(score(p, y).infection_rate == doctest::Approx(0.1));
}

TEST_CASE("bad input is refused") {
  const std::vector<uint8_t> y{0, 1};
  CHECK_THROWS_AS(score({0.2f, 1.5f}, y), Error);
  CHECK_THROWS_AS(score({0.2f, NAN}, y), Error);
  CHECK_THROWS_AS(score({0.2f, 0.5f}, y, 1.0), Error);
  CHECK_THROWS_AS(score_image(nullptr, nullptr, 0, 0.5), Error);
}

TEST_CASE("quartiles interpolate linearly between order statistics (type 7)") {
  // 1 2 3 4: h = 3q -> Q1 at 0.75 -> 1.75, median 2.5, Q3 at 2.25 -> 3.25
  const std::vector<double> four{4, 1, 3, 2};
  CHECK(quantile(four, 0.25) == doctest::Approx(1.75));
  CHECK(quantile(four, 0.5) == doctest::Approx(2.5));
  CHECK(quantile(four, 0.75) == doctest::Approx(3.25));
  CHECK(quantile(four, 0.0) == 1.0);
  CHECK(quantile(four, 1.0) == 4.0);
  // 1..5: exact order statistics 2, 3, 4
  const Distribution d = describe({5, 1, 4, 2, 3});
  CHECK(d.count == 5);
  CHECK(d.q1 == 2.0);
  CHECK(d.median == 3.0);
  CHECK(d.q3 == 4.0);
  CHECK(d.mean == 3.0);
  CHECK(d.std == doctest::Approx(std::sqrt(2.0)));  // population std
  const Distribution one = describe({0.7});
  CHECK(one.q1 == 0.7);
  CHECK(one.q3 == 0.7);
  CHECK(one.std == 0.0);
  const Distribution none = describe({});
  CHECK(none.count == 0);
  CHECK(std::isnan(none.median));
}

TEST_CASE("groups split at an infection rate of 0.015") {
  CHECK(lesion_group(0.0) == LesionGroup::Small);
  CHECK(lesion_group(0.01499) == LesionGroup::Small);
  CHECK(lesion_group(0.015) == LesionGroup::Large);
  CHECK(lesion_group(0.4) == LesionGroup::Large);

  std::vector<ImageMetrics> images(3);
  images[0].infection_rate = 0.01;
  images[0].dice = 0.2;
  images[1].infection_rate = 0.015;
  images[1].dice = 0.8;
  images[2].infection_rate = 0.3;
  images[2].dice = 0.9;
  const Summary s = summarize(images);
  CHECK(s.overall.images == 3);
  CHECK(s.small.images == 1);
  CHECK(s.large.images == 2);
  CHECK(s.small.dice.median == doctest::Approx(0.2));
  CHECK(s.large.dice.median == doctest::Approx(0.85));
  CHECK(s.overall.dice.mean == doctest::Approx(1.9 / 3));
}

TEST_CASE("the table and the JSON report carry every field") {
  std::vector<ImageMetrics> images(2);
  images[0].name = "a\"b.png";  // quoted correctly in JSON
  images[0].infection_rate = 0.2;
  images[0].dice = 0.5;
  images[1].name = "c.png";
  images[1].infection_rate = 0.3;
  images[1].dice = 0.7;
  const Summary s = summarize(images);  // group A is empty
  const std::string table = format_table(s);
  for (const char* word : {"dice", "sensitivity", "specificity", "mae", "A (small)", "B (large)", "0.6000 ± 0.1000"})
    CHECK_MESSAGE(table.find(word) != std::string::npos, word << " missing from\n" << table);

  const json::Value v = json::parse(to_json(s, images, 0.5));
  for (const char* group : {"overall", "group_a", "group_b"}) {
    const json::Value* g = v.find(group);
    REQUIRE(g);
    for (const char* metric : {"dice", "sensitivity", "specificity", "mae"}) {
      const json::Value* m = g->find(metric);
      REQUIRE(m);
      for (const char* stat : {"mean", "std", "median", "q1", "q3"}) CHECK(m->find(stat));
    }
  }
  CHECK(v.find("group_a")->find("dice")->find("median")->kind == json::Value::Kind::Null);
  CHECK(v.find("group_b")->find("images")->text == "2");
  REQUIRE(v.find("images")->items.size() == 2);
  CHECK(v.find("images")->items[0].find("name")->text == "a\"b.png");
}
