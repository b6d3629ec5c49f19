// The text side of perplexity and compare: reads [perplexity] text, tokenizes it without
// special tokens with the model folder's tokenizer, and cuts the evaluation windows.
#pragma once

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

// "\r[#####     ] 3/10 windows" on `err` (a newline when done == total).
void print_progress(std::ostream& err, int64_t done, int64_t total, const std::string& what);

}  // namespace kivi::host
