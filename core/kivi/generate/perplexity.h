// Teacher-forced scoring of a long text in windows, as tools/train/eval_perplexity.py and the
// Hugging Face sliding-window perplexity recipe do: each window is <bos> + up to context - 1
// text tokens, starting `stride` text tokens after the previous one; a window scores only the
// tokens no earlier window scored, so every text token is predicted exactly once. With
// stride = context - 1 the windows do not overlap and the number equals eval_perplexity.py's.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include <ATen/Tensor.h>

namespace kivi {
class CausalLM;
class KVCache;
}  // namespace kivi

namespace kivi::generate {

struct TextWindow {
  std::vector<int64_t> ids;  // <bos> + text tokens
  int64_t scored_from = 1;   // positions t >= scored_from of ids are predicted (from ids[< t])
};

// stride in [1, context - 1]; text_ids without special tokens.
std::vector<TextWindow> text_windows(std::span<const int64_t> text_ids, int64_t bos_id,
                                     int64_t context, int64_t stride);

// Runs `window` through `model` from an empty `cache` (reset first), `chunk` tokens per forward
// pass (0 = the whole window at once; after the first chunk every pass attends to what the
// cache stored, so a quantized cache shows its effect). For each chunk with scored positions,
// calls on_scored(log_probs [n, V] float32 on the host, targets [n] int64): the model's
// next-token log-probabilities at those positions and the tokens that followed.
using ScoredFn = std::function<void(const at::Tensor& log_probs, const at::Tensor& targets)>;
void score_window(CausalLM& model, KVCache& cache, const TextWindow& window, int64_t chunk,
                  const ScoredFn& on_scored);

// Sum of -log p(target) over a chunk's positions (double precision).
double nll_sum(const at::Tensor& log_probs, const at::Tensor& targets);

}  // namespace kivi::generate
