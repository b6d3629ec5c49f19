#include "kivi/generate/beam_search.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>

#include "kivi/cache/kv_cache.h"
#include "kivi/generate/forward_steps.h"
#include "kivi/model/causal_lm.h"
#include "kivi/util/error.h"

namespace kivi::generate {
namespace {

struct Beam {
  std::vector<int64_t> tokens;  // new tokens
  double logp = 0;              // summed log-probability of tokens
};

double penalized(double logp, size_t length, double length_penalty) {
  return logp / std::pow(static_cast<double>(std::max<size_t>(length, 1)), length_penalty);
}

}  // namespace

std::vector<Generation> beam_search(CausalLM& model, KVCache& cache,
                                    const std::vector<int64_t>& prompt,
                                    const GenerateOptions& options) {
  const int64_t beams = options.num_beams;
  check(cache.geometry().max_batch == beams,
        "beam search: the cache holds " + std::to_string(cache.geometry().max_batch) +
            " sequences, num_beams is " + std::to_string(beams));
  const int64_t context = context_length(model, options);
  const double lp = options.length_penalty;
  auto is_eos = [&](int64_t t) {
    return std::find(options.eos_ids.begin(), options.eos_ids.end(), t) != options.eos_ids.end();
  };
  std::vector<Generation> finished;
  auto worst_finished = [&] {
    double worst = std::numeric_limits<double>::infinity();
    for (const auto& g : finished) worst = std::min(worst, g.score);
    return worst;
  };
  auto add_finished = [&](Beam beam, StopReason reason) {
    Generation g;
    g.score = penalized(beam.logp, beam.tokens.size(), lp);
    g.tokens = std::move(beam.tokens);
    g.stop = reason;
    finished.push_back(std::move(g));
    std::stable_sort(finished.begin(), finished.end(),
                     [](const auto& a, const auto& b) { return a.score > b.score; });
    if (static_cast<int64_t>(finished.size()) > beams) finished.pop_back();
  };
  if (options.max_new_tokens == 0) return {Generation{}};

  // Every slot starts from the prompt; only slot 0 is live at first, so the first step does not
  // pick the same token num_beams times. The prompt is prefilled once, in slot 0, and the other
  // slots fork it (a paged cache shares its pages; a contiguous one copies the rows).
  std::vector<Beam> live(beams);
  for (int64_t b = 1; b < beams; ++b) live[b].logp = -std::numeric_limits<double>::infinity();
  std::vector<std::vector<int64_t>> prompts(beams);
  prompts[0] = prompt;
  at::Tensor logits = prefill(model, cache, prompts);  // [beams, V]: row 0's alone is meaningful
  cache.reorder(std::vector<int64_t>(beams, 0));
  const std::vector<int64_t> ones(beams, 1);
  for (int64_t step = 1;; ++step) {
    const at::Tensor logp = at::log_softmax(logits.to(at::kCPU, at::kDouble), -1);  // [beams, V]
    const int64_t vocab = logp.size(1);
    // Candidates: every (beam, token) with its total; keep the best 2 * beams, as transformers does
    // (enough that num_beams of them are not EOS).
    const at::Tensor total = logp + at::tensor(std::vector<double>([&] {
                                                 std::vector<double> s;
                                                 for (const Beam& b : live) s.push_back(b.logp);
                                                 return s;
                                               }()),
                                               at::kDouble)
                                        .unsqueeze(1);  // [beams, V]
    const int64_t take = std::min<int64_t>(2 * beams, beams * vocab);
    const auto [scores, flat] = total.view({-1}).topk(take);  // [take], sorted descending
    std::vector<Beam> next;
    std::vector<int64_t> source, tokens;
    for (int64_t i = 0; i < take && static_cast<int64_t>(next.size()) < beams; ++i) {
      const double score = scores[i].item<double>();
      if (!std::isfinite(score)) break;
      const int64_t index = flat[i].item<int64_t>();
      const int64_t beam = index / vocab, token = index % vocab;
      Beam candidate{live[beam].tokens, score};
      candidate.tokens.push_back(token);
      if (is_eos(token)) {
        if (i < beams)
          add_finished(std::move(candidate), StopReason::kEos);  // only a top-beams EOS counts
        continue;
      }
      next.push_back(std::move(candidate));
      source.push_back(beam);
      tokens.push_back(token);
    }
    const bool at_limit = step >= options.max_new_tokens ||
                          (context > 0 && static_cast<int64_t>(prompt.size()) + step >= context);
    // Done when the limit is reached, or when no live beam can beat the worst kept hypothesis
    // (its score can only fall: log-probabilities are negative; measured at the current length).
    const bool full = static_cast<int64_t>(finished.size()) >= beams;
    if (at_limit || next.empty() ||
        (full &&
         penalized(next.front().logp, next.front().tokens.size(), lp) <= worst_finished())) {
      if (at_limit)
        for (Beam& b : next)
          add_finished(std::move(b), step >= options.max_new_tokens ? StopReason::kMaxNewTokens
                                                                    : StopReason::kContext);
      break;
    }
    while (static_cast<int64_t>(next.size()) <
           beams) {  // too few non-EOS candidates: pad with dead slots
      next.push_back(Beam{next.front().tokens, -std::numeric_limits<double>::infinity()});
      source.push_back(source.front());
      tokens.push_back(tokens.front());
    }
    cache.reorder(source);
    live = std::move(next);
    logits = decode_step(model, cache, tokens, ones);
  }
  return finished;
}

}  // namespace kivi::generate
