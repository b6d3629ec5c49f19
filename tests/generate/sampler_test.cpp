// Sampling statistics against the distributions the filters should give, on fixed logits.
#include <catch2/catch.hpp>

#include <cmath>
#include <map>

#include <ATen/ATen.h>

#include "kivi/generate/sampler.h"
#include "kivi/util/error.h"

using Catch::Matchers::Contains;
using kivi::generate::Sampler;
using kivi::generate::SamplingOptions;

namespace {

// logits for 6 tokens: softmax at T=1 is about [0.47, 0.26, 0.13, 0.07, 0.05, 0.02]
const std::vector<float> kLogits = {2.0f, 1.4f, 0.7f, 0.1f, -0.2f, -1.0f};

at::Tensor logits() {
  return at::tensor(kLogits);
}

std::vector<double> softmax(const std::vector<double>& x, double t) {
  std::vector<double> p(x.size());
  double sum = 0;
  for (size_t i = 0; i < x.size(); ++i) sum += p[i] = std::exp(x[i] / t);
  for (double& v : p) v /= sum;
  return p;
}

// Draws n samples and returns Pearson's chi-square against `expected` (cells with p > 0), and
// fails if a token with p == 0 was drawn.
double chi_square(Sampler& sampler, const std::vector<double>& expected, int n,
                  std::span<const int64_t> history = {}) {
  std::vector<int> counts(expected.size(), 0);
  const at::Tensor l = logits();
  for (int i = 0; i < n; ++i) ++counts.at(sampler.next(l, history));
  double chi = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (expected[i] == 0) {
      CHECK(counts[i] == 0);
      continue;
    }
    const double e = expected[i] * n;
    chi += (counts[i] - e) * (counts[i] - e) / e;
  }
  return chi;
}

// 99.9% quantile of chi-square with k degrees of freedom (k <= 5).
double chi_bound(int dof) {
  static const double q[] = {0, 10.83, 13.82, 16.27, 18.47, 20.52};
  return q[dof];
}

std::vector<double> as_double() {
  return {kLogits.begin(), kLogits.end()};
}

}  // namespace

TEST_CASE("greedy picks the argmax and ignores the seed", "[generate][sampler]") {
  Sampler a({}, 1), b({}, 2);
  CHECK(a.next(logits(), {}) == 0);
  CHECK(b.next(logits(), {}) == 0);
  const auto p = a.distribution(logits(), {});
  CHECK(p[0] == 1.0);
}

TEST_CASE("temperature sampling follows softmax(logits / T)", "[generate][sampler]") {
  for (double t : {0.5, 1.0, 2.0}) {
    SamplingOptions o;
    o.temperature = t;
    Sampler s(o, 42);
    const auto expected = softmax(as_double(), t);
    const auto p = s.distribution(logits(), {});
    for (size_t i = 0; i < p.size(); ++i) CHECK(p[i] == Approx(expected[i]).epsilon(1e-9));
    CHECK(chi_square(s, expected, 20000) < chi_bound(5));
  }
}

TEST_CASE("top-k, top-p and min-p keep the right tokens and renormalize", "[generate][sampler]") {
  const auto full = softmax(as_double(), 1.0);  // ~[0.468, 0.257, 0.128, 0.070, 0.052, 0.023]
  auto renorm = [&](size_t keep) {
    std::vector<double> p(full.size(), 0.0);
    double sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += full[i];
    for (size_t i = 0; i < keep; ++i) p[i] = full[i] / sum;
    return p;
  };
  SamplingOptions o;
  o.temperature = 1.0;
  SECTION("top_k = 2") {
    o.top_k = 2;
    Sampler s(o, 7);
    CHECK(chi_square(s, renorm(2), 20000) < chi_bound(1));
  }
  SECTION("top_p = 0.8: the first three reach 0.853") {
    o.top_p = 0.8;
    Sampler s(o, 7);
    CHECK(chi_square(s, renorm(3), 20000) < chi_bound(2));
  }
  SECTION("min_p = 0.2: tokens below 0.2 * 0.468 = 0.094 go") {
    o.min_p = 0.2;
    Sampler s(o, 7);
    CHECK(chi_square(s, renorm(3), 20000) < chi_bound(2));
  }
  SECTION("top_k = 4 then top_p = 0.9 over the renormalized four") {
    o.top_k = 4;
    o.top_p = 0.9;
    Sampler s(o, 7);
    // Over the four: ~[0.506, 0.278, 0.138, 0.076]: the cumulative mass reaches 0.9 at three.
    CHECK(chi_square(s, renorm(3), 20000) < chi_bound(2));
  }
}

TEST_CASE("repetition penalty divides positive and multiplies negative logits of seen tokens",
          "[generate][sampler]") {
  SamplingOptions o;
  o.temperature = 1.0;
  o.repetition_penalty = 2.0;
  Sampler s(o, 3);
  const std::vector<int64_t> history = {0, 5, 0};
  std::vector<double> x = as_double();
  x[0] /= 2.0;
  x[5] *= 2.0;
  const auto expected = softmax(x, 1.0);
  const auto p = s.distribution(logits(), history);
  for (size_t i = 0; i < p.size(); ++i) CHECK(p[i] == Approx(expected[i]).epsilon(1e-9));
  CHECK(chi_square(s, expected, 20000, history) < chi_bound(5));
  // Greedy with a penalty: token 0 (2.0 -> 1.0) loses to token 1 (1.4).
  SamplingOptions g;
  g.repetition_penalty = 2.0;
  CHECK(Sampler(g, 0).next(logits(), history) == 1);
}

TEST_CASE("the same seed gives the same tokens; another seed others", "[generate][sampler]") {
  SamplingOptions o;
  o.temperature = 1.0;
  auto draw = [&](uint64_t seed) {
    Sampler s(o, seed);
    std::vector<int64_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.next(logits(), {}));
    return out;
  };
  CHECK(draw(5) == draw(5));
  CHECK(draw(5) != draw(6));
}

TEST_CASE("invalid sampling options are clear errors", "[generate][sampler]") {
  auto bad = [](SamplingOptions o) { kivi::generate::validate(o, "run.toml [generate]"); };
  SamplingOptions o;
  o.temperature = -0.5;
  CHECK_THROWS_WITH(
      bad(o), Contains("run.toml [generate]: temperature = -0.5: expected a finite number >= 0"));
  o = {};
  o.top_p = 0;
  CHECK_THROWS_WITH(bad(o), Contains("top_p = 0: expected a number in (0, 1]"));
  o.top_p = 1.5;
  CHECK_THROWS_WITH(bad(o), Contains("top_p = 1.5"));
  o = {};
  o.min_p = 1.2;
  CHECK_THROWS_WITH(bad(o), Contains("min_p = 1.2: expected a number in [0, 1]"));
  o = {};
  o.top_k = -1;
  CHECK_THROWS_WITH(bad(o), Contains("top_k = -1: expected an integer >= 0"));
  o = {};
  o.repetition_penalty = 0;
  CHECK_THROWS_WITH(bad(o), Contains("repetition_penalty = 0: expected a finite number > 0"));
  CHECK_NOTHROW(bad({}));
}
