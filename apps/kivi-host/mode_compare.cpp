// `kivi-host compare`: every [[compare.variants]] (a cache and an attention backend) on the same
// [perplexity] text windows and [generate] prompts. Against the first variant: perplexity change,
// KL(first || variant) and top-1 agreement of the teacher-forced next-token distributions, and
// greedy-continuation agreement; also cache bytes, peak RSS and tokens/s. One table; JSON too
// with [output] json. The model is loaded once; variants run one after another, each putting its
// cache and attention in (use_cache). Every variant's pairing is checked before the model loads.
// The first variant's log-probabilities are kept on the host, [scored tokens, vocab] float32.
#include <chrono>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <ostream>
#include <sstream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "host_context.h"
#include "kivi/cache/kv_cache.h"
#include "model_session.h"
#include "text_scoring.h"

namespace kivi::host {
namespace {

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

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

}  // namespace

int run_compare_mode(HostContext& context) {
  const HostConfig& cfg = context.config;
  const auto& variants = cfg.compare.variants;
  check(variants.size() >= 2,
        cfg.file.string() + ": mode compare needs two or more [[compare.variants]]");
  std::vector<at::Tensor> reference;  // the first variant's log-probs, one [n, V] per scored chunk
  std::vector<VariantResult> results;
  std::vector<CachePairing> pairings;
  for (size_t v = 0; v < variants.size(); ++v)
    pairings.push_back(make_cache_pairing(context, variants[v].cache, variants[v].attention,
                                          "compare.variants[" + std::to_string(v) + "]"));
  ModelSession session = open_model(context, pairings);
  context.err << "compare: model loaded once; " << variants.size()
              << " variants swap their cache and attention in turn\n";
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
      r.cache_bytes = std::max(r.cache_bytes, cache->memory().total());
      r.bits_per_element =
          std::max(r.bits_per_element, cache->memory().bits_per_element(cache->geometry()));
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

  // The table.
  auto& out = context.out;
  const double base = results[0].ppl;
  out << std::left << std::setw(14) << "variant" << std::setw(10) << "cache" << std::setw(10)
      << "attention" << std::right << std::setw(10) << "ppl" << std::setw(9) << "d_ppl%"
      << std::setw(11) << "KL" << std::setw(8) << "top1%" << std::setw(9) << "greedy%"
      << std::setw(12) << "cache_B" << std::setw(7) << "bits" << std::setw(10) << "peakMiB"
      << std::setw(10) << "score/s" << std::setw(9) << "gen/s"
      << "\n";
  for (const auto& r : results)
    out << std::left << std::setw(14) << r.name << std::setw(10) << r.cache << std::setw(10)
        << r.attention << std::right << std::setw(10) << fixed(r.ppl, 3) << std::setw(9)
        << fixed(100 * (r.ppl / base - 1), 2) << std::setw(11) << fixed(r.kl, 6) << std::setw(8)
        << fixed(100 * r.top1, 2) << std::setw(9) << fixed(100 * r.greedy_agreement, 1)
        << std::setw(12) << r.cache_bytes << std::setw(7) << fixed(r.bits_per_element, 2)
        << std::setw(10) << fixed(r.peak_rss / 1048576.0, 1) << std::setw(10)
        << fixed(r.score_tokens_per_s, 0) << std::setw(9) << fixed(r.decode_tokens_per_s, 1)
        << "\n";
  out << "(" << results[0].tokens
      << " scored tokens; KL(first || variant) in nats per token; greedy%: "
      << "shared prefix of the greedy continuations; cache_B: most bytes a window's cache held)\n";

  if (!cfg.json_output.empty()) {
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
    std::ofstream file(cfg.json_output);
    check(file.good(), cfg.file.string() + ": [output] json: cannot write " + cfg.json_output);
    file << doc.dump(2) << "\n";
    out << "json: " << cfg.json_output << "\n";
  }
  return 0;
}

}  // namespace kivi::host
