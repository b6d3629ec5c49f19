#include "text_scoring.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <sstream>

#include "kivi/cache/kv_cache.h"
#include "kivi/util/input_file.h"
#include "seconds_since.h"

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

double PerplexityResult::perplexity() const {
  return std::exp(nll);
}

PerplexityResult score_perplexity(HostContext& context, ModelSession& session, const TextPlan& plan,
                                  const std::function<void(const KVCache&)>& last) {
  const HostConfig& cfg = context.config;
  auto cache = create_cache(session, session.model().cache_geometry(1, plan.context),
                            "[perplexity] context");
  double nll = 0;
  PerplexityResult r;
  const auto start = std::chrono::steady_clock::now();
  for (size_t w = 0; w < plan.windows.size(); ++w) {
    generate::score_window(session.model(), *cache, plan.windows[w], cfg.perplexity.chunk,
                           [&](const at::Tensor& log_probs, const at::Tensor& targets) {
                             nll += generate::nll_sum(log_probs, targets);
                             r.tokens += targets.numel();
                           });
    if (cfg.perplexity.progress)
      print_progress(context.err, static_cast<int64_t>(w + 1), plan.windows.size(), "windows");
  }
  r.seconds = seconds_since(start);
  r.nll = r.tokens > 0 ? nll / r.tokens : 0;
  r.cache_bytes = cache->memory().total();
  r.bits_per_element = cache->memory().bits_per_element(cache->geometry());
  if (last) last(*cache);
  return r;
}

void print_progress(std::ostream& err, int64_t done, int64_t total, const std::string& what) {
  constexpr int kWidth = 30;
  const int filled = total > 0 ? static_cast<int>(kWidth * done / total) : kWidth;
  err << "\r[" << std::string(filled, '#') << std::string(kWidth - filled, ' ') << "] " << done
      << "/" << total << " " << what << (done == total ? "\n" : "") << std::flush;
}

}  // namespace kivi::host
