// The text side of perplexity and compare: reads [perplexity] text, tokenizes it without
// special tokens with the model folder's tokenizer, and cuts the evaluation windows.
#pragma once

#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "host_config.h"
#include "kivi/generate/perplexity.h"
#include "model_session.h"

namespace kivi::host {

struct TextPlan {
  int64_t text_tokens = 0;  // tokens of the (possibly cut) text
  int64_t context = 0;
  int64_t stride = 0;
  std::vector<generate::TextWindow> windows;
};

TextPlan plan_text_windows(const HostConfig& cfg, const ModelSession& session);

// The plan's windows scored through the session's model and cache: what `kivi-host perplexity`
// prints and the Engine returns.
struct PerplexityResult {
  double nll = 0;      // nats per scored token
  int64_t tokens = 0;  // scored (predicted) tokens
  double seconds = 0;
  int64_t cache_bytes = 0;  // what the cache held after the last window
  double bits_per_element = 0;
  double perplexity() const;
};

// Scores every window (progress on context.err when [perplexity] progress); `last` (if given)
// sees the cache after the last window, before it is freed.
PerplexityResult score_perplexity(HostContext& context, ModelSession& session, const TextPlan& plan,
                                  const std::function<void(const KVCache&)>& last = {});

// "\r[#####     ] 3/10 windows" on `err` (a newline when done == total).
void print_progress(std::ostream& err, int64_t done, int64_t total, const std::string& what);

}  // namespace kivi::host
