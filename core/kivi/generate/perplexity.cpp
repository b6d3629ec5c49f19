#include "kivi/generate/perplexity.h"

#include <algorithm>

#include <ATen/ATen.h>

#include "kivi/cache/kv_cache.h"
#include "kivi/model/causal_lm.h"
#include "kivi/util/error.h"

namespace kivi::generate {

std::vector<TextWindow> text_windows(std::span<const int64_t> text_ids, int64_t bos_id,
                                     int64_t context, int64_t stride) {
  check(context >= 2, "perplexity: context = " + std::to_string(context) + ": expected >= 2");
  check(stride >= 1 && stride <= context - 1,
        "perplexity: stride = " + std::to_string(stride) +
            ": expected 1 .. context - 1 = " + std::to_string(context - 1));
  const int64_t n = static_cast<int64_t>(text_ids.size());
  std::vector<TextWindow> windows;
  int64_t scored_end = 0;  // text tokens [0, scored_end) are scored already
  for (int64_t begin = 0; scored_end < n; begin += stride) {
    const int64_t end = std::min(begin + context - 1, n);
    TextWindow w;
    w.ids.push_back(bos_id);
    w.ids.insert(w.ids.end(), text_ids.begin() + begin, text_ids.begin() + end);
    w.scored_from = 1 + (scored_end - begin);  // text token i sits at position 1 + i - begin
    windows.push_back(std::move(w));
    scored_end = end;
  }
  return windows;
}

void score_window(CausalLM& model, KVCache& cache, const TextWindow& window, int64_t chunk,
                  const ScoredFn& on_scored) {
  check(cache.geometry().max_batch == 1, "perplexity: the cache must hold one sequence");
  cache.reset();
  const int64_t length = static_cast<int64_t>(window.ids.size());
  if (chunk <= 0) chunk = length;
  const at::Device device = model.options().device;
  const at::Tensor all = at::tensor(window.ids, at::kLong);  // [L]
  for (int64_t start = 0; start < length - 1; start += chunk) {
    // Positions [start, stop) are fed; position t predicts token t + 1.
    const int64_t stop = std::min(start + chunk, length - 1);
    const at::Tensor ids = all.slice(0, start, stop).unsqueeze(0).to(device);  // [1, n]
    const at::Tensor positions =
        at::arange(start, stop, at::kLong).unsqueeze(0).to(device);                   // [1, n]
    const at::Tensor logits = model.forward(ids, positions, {}, cache).select(0, 0);  // [n, V]
    // Scored targets t + 1 >= scored_from, i.e. fed positions t >= scored_from - 1.
    const int64_t first = std::max(start, window.scored_from - 1);
    if (first >= stop) continue;
    const at::Tensor log_probs =
        at::log_softmax(logits.slice(0, first - start, stop - start).to(at::kFloat), -1);
    on_scored(log_probs.to(at::kCPU), all.slice(0, first + 1, stop + 1));
  }
}

double nll_sum(const at::Tensor& log_probs, const at::Tensor& targets) {
  return -log_probs.gather(1, targets.unsqueeze(1)).to(at::kDouble).sum().item<double>();
}

}  // namespace kivi::generate
