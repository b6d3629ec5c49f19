// `kivi-host perplexity`: the [perplexity] text scored in windows (<bos> + context - 1 tokens,
// advancing by stride) through the [model] with the configured cache; prints the perplexity
// and the number of predicted tokens.
#include <chrono>
#include <cmath>
#include <iomanip>
#include <ostream>

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
  auto cache = create_cache(session, session.model().cache_geometry(1, plan.context),
                            "[perplexity] context");
  double nll = 0;
  int64_t count = 0;
  const auto start = std::chrono::steady_clock::now();
  for (size_t w = 0; w < plan.windows.size(); ++w) {
    generate::score_window(session.model(), *cache, plan.windows[w], cfg.perplexity.chunk,
                           [&](const at::Tensor& log_probs, const at::Tensor& targets) {
                             nll += generate::nll_sum(log_probs, targets);
                             count += targets.numel();
                           });
    if (cfg.perplexity.progress)
      print_progress(context.err, static_cast<int64_t>(w + 1), plan.windows.size(), "windows");
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  out << std::fixed << std::setprecision(4) << "perplexity: " << std::exp(nll / count) << " (nll "
      << nll / count << " nats/token) over " << count << " tokens, " << std::setprecision(1)
      << count / seconds << " tokens/s\n"
      << std::defaultfloat;
  if (cfg.perplexity.cache_stats) print_cache_stats(out, *cache);
  return 0;
}

}  // namespace kivi::host
