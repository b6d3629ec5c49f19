// compare's work apart from its printing: every [[compare.variants]] (a cache and the attention
// that reads it) on the same [perplexity] text windows and [generate] prompts, against the first.
// `kivi-host compare` prints the results as a table; the Engine (kivi/engine.h) returns them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host_context.h"
#include "model_session.h"

namespace kivi::host {

struct VariantResult {
  std::string name, cache, attention;
  double ppl = 0, nll = 0;
  int64_t tokens = 0;
  double kl = 0, top1 = 1, greedy_agreement = 1;
  int64_t cache_bytes = 0;  // the most a window's cache held
  double bits_per_element = 0;
  int64_t peak_rss = 0;  // bytes; the process's high-water mark while this variant ran
  double score_tokens_per_s = 0, decode_tokens_per_s = 0;
  std::vector<std::vector<int64_t>> greedy;
};

// Each variant's cache and attention, checked together (before any model loads). Throws
// unless there are two or more.
std::vector<CachePairing> compare_pairings(const HostContext& context);

// Runs each pairing in turn on `session` (whose model serves all of them), the first being the
// reference; leaves the last one in use. Prints the model and text lines on context.out.
std::vector<VariantResult> compare_variants(HostContext& context, ModelSession& session,
                                            const std::vector<CachePairing>& pairings);

// The results as [output] json writes them.
nlohmann::json compare_json(const HostConfig& cfg, const std::vector<VariantResult>& results);

}  // namespace kivi::host
