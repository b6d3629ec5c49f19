// The two kinds of forward pass generation makes, shared by the sampling loop and beam search.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <ATen/Tensor.h>

namespace kivi {
class CausalLM;
class KVCache;
}  // namespace kivi

namespace kivi::generate {

// Prompts (right-padded into one [B, T] batch) through an empty cache; returns each row's
// logits at its last prompt token, [B, V] float32 on the model's device. An empty prompt leaves
// its row empty (its logits unspecified).
at::Tensor prefill(CausalLM& model, KVCache& cache,
                   const std::vector<std::vector<int64_t>>& prompts);

// One token per row at position cache.length(b); rows with counts[b] == 0 store nothing.
// Returns [B, V] float32 (rows with count 0 unspecified).
at::Tensor decode_step(CausalLM& model, KVCache& cache, const std::vector<int64_t>& tokens,
                       std::span<const int64_t> counts);

}  // namespace kivi::generate
