// Next-token choice from one row of logits: greedy (temperature 0) or seeded sampling with
// temperature, top-k, top-p, min-p and a repetition penalty, in the order transformers applies
// them (penalty, temperature, top-k, top-p, min-p). One Sampler per request: its generator is
// its own, so a request's tokens do not depend on the other rows of a batch.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

namespace kivi::generate {

struct SamplingOptions {
  double temperature = 0.0;         // 0 = greedy; > 0 samples
  int64_t top_k = 0;                // 0 = off
  double top_p = 1.0;               // in (0, 1]; 1 = off
  double min_p = 0.0;               // in [0, 1]; 0 = off
  double repetition_penalty = 1.0;  // > 0; 1 = off (HF: divide positive logits, multiply negative)
};

// Throws kivi::Error naming `where` (e.g. "run.toml [generate]"), the field, its value and the
// allowed range.
void validate(const SamplingOptions& options, const std::string& where);

class Sampler {
 public:
  Sampler(SamplingOptions options, uint64_t seed);

  // logits: [V] (any float dtype, any device; read on the host). history: the tokens the
  // repetition penalty applies to (prompt and generated so far).
  int64_t next(const at::Tensor& logits, std::span<const int64_t> history);

  // The distribution next() samples from (after every filter), [V] probabilities summing to 1;
  // greedy gives a one-hot. For tests and for inspection.
  std::vector<double> distribution(const at::Tensor& logits,
                                   std::span<const int64_t> history) const;

  const SamplingOptions& options() const { return options_; }

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
};

}  // namespace kivi::generate
