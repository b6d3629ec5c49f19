#include "text_scoring.h"

#include <filesystem>
#include <fstream>
#include <ostream>
#include <sstream>

#include "kivi/util/input_file.h"

namespace kivi::host {

TextPlan plan_text_windows(const HostConfig& cfg, const ModelSession& session) {
  const PerplexityChoice& p = cfg.perplexity;
  const std::string where = cfg.file.string() + ": [perplexity]";
  check(!p.text.empty(), where + " text: needed (a text file to score)");
  check(session.tokenizer.has_value(),
        where + ": " + cfg.model.path.string() + " has no tokenizer.json");
  std::ifstream in(p.text, std::ios::binary);
  check(in.good(),
        where + " text: cannot open " + p.text.string() + missing_input_note(cfg.file, p.text));
  check_input_file(p.text, "[perplexity] text");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  const std::vector<int32_t> ids32 = session.tokenizer->encode(buffer.str(), false);
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  if (p.max_tokens > 0 && static_cast<int64_t>(ids.size()) > p.max_tokens) ids.resize(p.max_tokens);
  check(!ids.empty(), where + " text: " + p.text.string() + " has no tokens");
  // <bos>: the model config's, else the tokenizer's (eval_perplexity.py uses the tokenizer's).
  std::optional<int64_t> bos = session.tokenizer->bos_id();
  if (!bos) bos = session.config.bos_token_id;
  check(bos.has_value(),
        where + ": the model has no bos token (config.json bos_token_id or the tokenizer's)");
  const int64_t model_context = position_limit(session.config);  // 0: dynamic NTK rope, no limit
  check(model_context <= 0 || p.context <= model_context,
        where + " context = " + std::to_string(p.context) +
            " exceeds the model's max_position_embeddings (" + std::to_string(model_context) +
            "; only a dynamic NTK rope may go past it)");
  TextPlan plan;
  plan.text_tokens = static_cast<int64_t>(ids.size());
  plan.context = p.context;
  plan.stride = p.stride > 0 ? p.stride : p.context - 1;
  plan.windows = generate::text_windows(ids, *bos, plan.context, plan.stride);
  if (p.max_windows > 0 && static_cast<int64_t>(plan.windows.size()) > p.max_windows)
    plan.windows.resize(p.max_windows);
  return plan;
}

void print_progress(std::ostream& err, int64_t done, int64_t total, const std::string& what) {
  constexpr int kWidth = 30;
  const int filled = total > 0 ? static_cast<int>(kWidth * done / total) : kWidth;
  err << "\r[" << std::string(filled, '#') << std::string(kWidth - filled, ' ') << "] " << done
      << "/" << total << " " << what << (done == total ? "\n" : "") << std::flush;
}

}  // namespace kivi::host
