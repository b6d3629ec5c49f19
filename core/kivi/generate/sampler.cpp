#include "kivi/generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>

#include <ATen/ATen.h>

#include "kivi/util/error.h"

namespace kivi::generate {
namespace {

std::string number(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// The logits as doubles on the host, with the repetition penalty applied.
std::vector<double> penalized(const at::Tensor& logits, std::span<const int64_t> history,
                              double penalty) {
  const at::Tensor row = logits.detach().to(at::kCPU, at::kDouble).contiguous().view({-1});  // [V]
  std::vector<double> out(row.data_ptr<double>(), row.data_ptr<double>() + row.numel());
  if (penalty != 1.0) {
    std::vector<bool> seen(out.size(), false);
    for (int64_t id : history) {
      if (id < 0 || id >= static_cast<int64_t>(out.size()) || seen[id]) continue;
      seen[id] = true;
      out[id] = out[id] > 0 ? out[id] / penalty : out[id] * penalty;
    }
  }
  return out;
}

}  // namespace

void validate(const SamplingOptions& o, const std::string& where) {
  auto fail = [&](const std::string& field, double value, const std::string& expected) {
    throw Error(where + ": " + field + " = " + number(value) + ": expected " + expected);
  };
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    fail("temperature", o.temperature, "a finite number >= 0 (0 = greedy)");
  if (o.top_k < 0) fail("top_k", static_cast<double>(o.top_k), "an integer >= 0 (0 = off)");
  if (!(o.top_p > 0 && o.top_p <= 1)) fail("top_p", o.top_p, "a number in (0, 1] (1 = off)");
  if (!(o.min_p >= 0 && o.min_p <= 1)) fail("min_p", o.min_p, "a number in [0, 1] (0 = off)");
  if (!(o.repetition_penalty > 0) || !std::isfinite(o.repetition_penalty))
    fail("repetition_penalty", o.repetition_penalty, "a finite number > 0 (1 = off)");
}

Sampler::Sampler(SamplingOptions options, uint64_t seed) : options_(options), rng_(seed) {
  validate(options_, "sampling options");
}

std::vector<double> Sampler::distribution(const at::Tensor& logits,
                                          std::span<const int64_t> history) const {
  std::vector<double> x = penalized(logits, history, options_.repetition_penalty);
  const size_t vocab = x.size();
  check(vocab > 0, "Sampler: empty logits");
  std::vector<double> p(vocab, 0.0);
  if (options_.temperature == 0) {
    p[std::max_element(x.begin(), x.end()) - x.begin()] = 1.0;  // first maximum, as argmax
    return p;
  }
  // Token ids by decreasing logit (ties by id, so the order is deterministic).
  std::vector<int64_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return x[a] > x[b]; });
  size_t keep = vocab;
  if (options_.top_k > 0) keep = std::min<size_t>(keep, static_cast<size_t>(options_.top_k));
  // Softmax over the kept tokens at the temperature (max subtracted for stability).
  const double top = x[order[0]] / options_.temperature;
  double sum = 0;
  for (size_t i = 0; i < keep; ++i)
    sum += p[order[i]] = std::exp(x[order[i]] / options_.temperature - top);
  for (size_t i = 0; i < keep; ++i) p[order[i]] /= sum;
  // top-p: the smallest prefix whose mass reaches top_p (the token that crosses it stays).
  if (options_.top_p < 1) {
    double mass = 0;
    size_t n = 0;
    while (n < keep && mass < options_.top_p) mass += p[order[n++]];
    keep = std::max<size_t>(n, 1);
  }
  // min-p: tokens below min_p times the most likely one's probability go.
  if (options_.min_p > 0) {
    const double floor = options_.min_p * p[order[0]];
    size_t n = 1;
    while (n < keep && p[order[n]] >= floor) ++n;
    keep = n;
  }
  sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += p[order[i]];
  for (size_t i = keep; i < vocab; ++i) p[order[i]] = 0;
  for (size_t i = 0; i < keep; ++i) p[order[i]] /= sum;
  return p;
}

int64_t Sampler::next(const at::Tensor& logits, std::span<const int64_t> history) {
  if (options_.temperature == 0 && options_.repetition_penalty == 1.0)
    return logits.argmax().item<int64_t>();  // no host copy of the whole row
  const std::vector<double> p = distribution(logits, history);
  if (options_.temperature == 0) return std::max_element(p.begin(), p.end()) - p.begin();
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  double acc = 0;
  int64_t last = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0) continue;
    last = static_cast<int64_t>(i);
    acc += p[i];
    if (u < acc) return last;
  }
  return last;  // rounding: u fell past the accumulated mass
}

}  // namespace kivi::generate
