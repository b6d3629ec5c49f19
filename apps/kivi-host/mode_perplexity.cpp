// `kivi-host perplexity`: the [perplexity] text scored in windows (<bos> + context - 1 tokens,
// advancing by stride) through the [model] with the configured cache; prints the perplexity
// and the number of predicted tokens.
#include <iomanip>
#include <ostream>
#include <sstream>

#include "host_context.h"
#include "kivi/cache/kv_cache.h"
#include "model_session.h"
#include "text_scoring.h"

namespace kivi::host {

int run_perplexity_mode(HostContext& context) {
  const HostConfig& cfg = context.config;
  ModelSession session = open_model_session(context, cfg.cache, cfg.attention);
  const TextPlan plan = plan_text_windows(cfg, session);
  auto& out = context.out;
  out << describe(session) << "\n";
  out << "text: " << cfg.perplexity.text.string() << ", " << plan.text_tokens << " tokens, "
      << plan.windows.size() << " windows (context " << plan.context << ", stride " << plan.stride
      << ", chunk " << cfg.perplexity.chunk << ")\n";
  std::ostringstream stats;  // printed after the perplexity
  const PerplexityResult r = score_perplexity(context, session, plan, [&](const KVCache& cache) {
    if (cfg.perplexity.cache_stats) print_cache_stats(stats, cache);
  });
  out << std::fixed << std::setprecision(4) << "perplexity: " << r.perplexity() << " (nll " << r.nll
      << " nats/token) over " << r.tokens << " tokens, " << std::setprecision(1)
      << r.tokens / r.seconds << " tokens/s\n"
      << std::defaultfloat << stats.str();
  return 0;
}

}  // namespace kivi::host
