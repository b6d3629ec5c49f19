#include "compare_run.h"

#include <chrono>
#include <cmath>
#include <fstream>
#include <ostream>
#include <string>

#include <ATen/ATen.h>

#include "kivi/cache/cache_usage.h"
#include "kivi/cache/kv_cache.h"
#include "seconds_since.h"
#include "text_scoring.h"

namespace kivi::host {
namespace {

// Resets the kernel's peak-RSS counter (Linux), so VmHWM then measures this variant alone.
void reset_peak_rss() {
  std::ofstream("/proc/self/clear_refs") << "5";
}
int64_t peak_rss() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

}  // namespace

std::vector<CachePairing> compare_pairings(const HostContext& context) {
  const HostConfig& cfg = context.config;
  const auto& variants = cfg.compare.variants;
  check(variants.size() >= 2,
        cfg.file.string() + ": mode compare needs two or more [[compare.variants]]");
  std::vector<CachePairing> pairings;
  for (size_t v = 0; v < variants.size(); ++v)
    pairings.push_back(make_cache_pairing(context, variants[v].cache, variants[v].attention,
                                          "compare.variants[" + std::to_string(v) + "]"));
  return pairings;
}

std::vector<VariantResult> compare_variants(HostContext& context, ModelSession& session,
                                            const std::vector<CachePairing>& pairings) {
  const HostConfig& cfg = context.config;
  const auto& variants = cfg.compare.variants;
  check(pairings.size() == variants.size(), "compare_variants: one pairing per variant");
  std::vector<at::Tensor> reference;  // the first variant's log-probs, one [n, V] per scored chunk
  std::vector<VariantResult> results;
  for (size_t v = 0; v < variants.size(); ++v) {
    reset_peak_rss();
    use_cache(session, pairings[v]);
    if (v == 0) context.out << describe(session) << "\n";
    const TextPlan plan = plan_text_windows(cfg, session);
    if (v == 0)
      context.out << "text: " << cfg.perplexity.text.string() << ", " << plan.text_tokens
                  << " tokens, " << plan.windows.size() << " windows (context " << plan.context
                  << ", stride " << plan.stride << ", chunk " << cfg.perplexity.chunk << ")\n";
    VariantResult r;
    r.name = variants[v].name;
    r.cache = session.cache_name;
    r.attention = session.attention_name;
    auto cache = create_cache(session, session.model().cache_geometry(1, plan.context),
                              "[perplexity] context");
    size_t chunk_index = 0;
    double kl_sum = 0;
    int64_t agree = 0;
    const auto start = std::chrono::steady_clock::now();
    for (size_t w = 0; w < plan.windows.size(); ++w) {
      generate::score_window(
          session.model(), *cache, plan.windows[w], cfg.perplexity.chunk,
          [&](const at::Tensor& log_probs, const at::Tensor& targets) {  // [n, V], [n]
            r.nll += generate::nll_sum(log_probs, targets);
            r.tokens += targets.numel();
            if (v == 0) {
              reference.push_back(log_probs);
              return;
            }
            const at::Tensor& ref = reference.at(chunk_index++);
            kl_sum += (ref.exp() * (ref - log_probs)).sum().item<double>();
            agree += ref.argmax(-1).eq(log_probs.argmax(-1)).sum().item<int64_t>();
          });
      // Held bytes per stored element; both summed over the ranks under tensor parallelism
      // (the cache's geometry is one rank's).
      const int64_t held = cache->memory().total();
      r.cache_bytes = std::max(r.cache_bytes, held);
      r.bits_per_element = std::max(r.bits_per_element, cache_usage(*cache).bits(held));
      if (cfg.perplexity.progress)
        print_progress(context.err, static_cast<int64_t>(w + 1), plan.windows.size(),
                       "windows, " + r.name);
    }
    r.score_tokens_per_s = r.tokens / seconds_since(start);
    r.ppl = std::exp(r.nll / r.tokens);
    if (v > 0) {
      r.kl = kl_sum / r.tokens;
      r.top1 = static_cast<double>(agree) / r.tokens;
    }
    // Greedy continuations of the [generate] prompts, one batch.
    std::vector<std::vector<int64_t>> prompts = cfg.generate.prompt_ids;
    for (const std::string& p : cfg.generate.prompts) {
      const auto ids = session.tokenizer->encode(p, cfg.generate.add_special_tokens);
      prompts.emplace_back(ids.begin(), ids.end());
    }
    if (!prompts.empty()) {
      generate::GenerateOptions options = generate_options(cfg, session);
      // Warned about once; later variants get the same cut from generate::context_length.
      if (v == 0)
        options.context =
            effective_context(context, session, cfg.generate.context, "[generate] context");
      options.sampling = {};  // greedy: agreement between variants is about the cache, not the dice
      options.num_beams = 1;
      options.stop_strings.clear();
      auto gen_cache = create_cache(session, session.model().cache_geometry(prompts.size()),
                                    "[generate] prompts (fewer at once)");
      const auto gen_start = std::chrono::steady_clock::now();
      const auto out = generate::generate(session.model(), *gen_cache, prompts, options);
      int64_t generated = 0;
      for (const auto& g : out) {
        r.greedy.push_back(g.tokens);
        generated += static_cast<int64_t>(g.tokens.size());
      }
      r.decode_tokens_per_s = generated / seconds_since(gen_start);
      if (v > 0) {
        int64_t same = 0, total = 0;
        for (size_t p = 0; p < out.size(); ++p) {
          const auto& a = results[0].greedy[p];
          const auto& b = r.greedy[p];
          size_t n = 0;
          while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
          same += static_cast<int64_t>(n);
          total += static_cast<int64_t>(a.size());
        }
        r.greedy_agreement = total > 0 ? static_cast<double>(same) / total : 1.0;
      }
    }
    r.peak_rss = peak_rss();
    results.push_back(std::move(r));
  }

  return results;
}

nlohmann::json compare_json(const HostConfig& cfg, const std::vector<VariantResult>& results) {
  const double base = results.at(0).ppl;
  nlohmann::json doc;
  doc["mode"] = "compare";
  doc["model"] = cfg.model.path.string();
  doc["text"] = cfg.perplexity.text.string();
  doc["scored_tokens"] = results[0].tokens;
  for (const auto& r : results)
    doc["variants"].push_back({{"name", r.name},
                               {"cache", r.cache},
                               {"attention", r.attention},
                               {"perplexity", r.ppl},
                               {"perplexity_change", r.ppl / base - 1},
                               {"kl", r.kl},
                               {"top1_agreement", r.top1},
                               {"greedy_agreement", r.greedy_agreement},
                               {"cache_bytes", r.cache_bytes},
                               {"bits_per_element", r.bits_per_element},
                               {"peak_rss_bytes", r.peak_rss},
                               {"score_tokens_per_s", r.score_tokens_per_s},
                               {"decode_tokens_per_s", r.decode_tokens_per_s},
                               {"greedy", r.greedy}});
  return doc;
}

}  // namespace kivi::host
