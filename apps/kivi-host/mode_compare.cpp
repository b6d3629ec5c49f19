// `kivi-host compare`: every [[compare.variants]] (a cache and an attention backend) on the same
// [perplexity] text windows and [generate] prompts. Against the first variant: perplexity change,
// KL(first || variant) and top-1 agreement of the teacher-forced next-token distributions, and
// greedy-continuation agreement; also cache bytes, peak RSS and tokens/s. One table; JSON too
// with [output] json. The model is loaded once; variants run one after another, each putting its
// cache and attention in (use_cache). Every variant's pairing is checked before the model loads.
// The first variant's log-probabilities are kept on the host, [scored tokens, vocab] float32.
#include <fstream>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "compare_run.h"
#include "host_context.h"
#include "model_session.h"

namespace kivi::host {
namespace {

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

}  // namespace

int run_compare_mode(HostContext& context) {
  const HostConfig& cfg = context.config;
  const std::vector<CachePairing> pairings = compare_pairings(context);
  ModelSession session = open_model(context, pairings);
  context.err << "compare: model loaded once; " << pairings.size()
              << " variants swap their cache and attention in turn\n";
  const std::vector<VariantResult> results = compare_variants(context, session, pairings);

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
    std::ofstream file(cfg.json_output);
    check(file.good(), cfg.file.string() + ": [output] json: cannot write " + cfg.json_output);
    file << compare_json(cfg, results).dump(2) << "\n";
    out << "json: " << cfg.json_output << "\n";
  }
  return 0;
}

}  // namespace kivi::host
