// Beam search over one prompt: num_beams cache slots, reordered through KVCache::reorder after
// every step. Hypotheses end at an EOS id or at max_new_tokens; scores are the summed
// log-probabilities divided by new_tokens^length_penalty (transformers' BeamSearchScorer, with
// its early_stopping=False stopping heuristic).
#pragma once

#include <vector>

#include "kivi/generate/generate.h"

namespace kivi::generate {

// cache: empty, max_batch == options.num_beams. Returns up to num_beams finished hypotheses,
// best first.
std::vector<Generation> beam_search(CausalLM& model, KVCache& cache,
                                    const std::vector<int64_t>& prompt,
                                    const GenerateOptions& options);

}  // namespace kivi::generate
