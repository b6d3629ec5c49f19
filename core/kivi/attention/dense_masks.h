// What the attention backends share: which key each query may see (causal, padding, sliding
// window), for prefill over new tokens and for decode over a cache, GQA expansion, and prefill
// through SDPA (the "sdpa" backend, and the "kivi" backend on the GPU).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <ATen/Tensor.h>

#include "kivi/attention/attention.h"

namespace kivi::attention {

// Query rows beyond a sequence's count (padding) get key 0 allowed, so that no softmax row is
// empty (NaN); their outputs are zeroed afterwards by zero_padding().

// Prefill among T new tokens: query t of row b sees key s <= t, s < counts[b], and within the
// sliding window (s > t - window) when window > 0. Returns bool [B, 1, T, T] on `device`.
at::Tensor prefill_mask(int64_t batch, int64_t tokens, std::span<const int64_t> counts,
                        int64_t window, const at::Device& device);

// Decode: query t of row b sits at position lengths[b] - counts[b] + t and sees cache
// positions up to its own (and within the window). Returns bool [B, 1, T, keys] on `device`.
at::Tensor decode_mask(std::span<const int64_t> lengths, std::span<const int64_t> counts,
                       int64_t tokens, int64_t keys, int64_t window, const at::Device& device);

// [B, kv_heads, S, D] -> [B, kv_heads * groups, S, D], each kv head repeated for its group
// of query heads (transformers' repeat_kv).
at::Tensor expand_kv(const at::Tensor& kv, int64_t q_heads);

// Zeroes out[b, :, t, :] for t >= counts[b]; out: [B, heads, T, D].
at::Tensor zero_padding(const at::Tensor& out, std::span<const int64_t> counts);

// counts, or T for every row when counts is empty.
std::vector<int64_t> resolve_counts(std::span<const int64_t> counts, int64_t batch, int64_t tokens);

// Checks q/k/v shapes for prefill (names the backend in messages).
void check_prefill_inputs(const char* who, const at::Tensor& q, const at::Tensor& k,
                          const at::Tensor& v, std::span<const int64_t> counts);

// SDPA under a boolean mask [B, 1, T, S]; kv heads are expanded first (the fused GQA path does
// not take a mask on every kernel). q: [B, Hq, T, D]; k, v: [B, H, S, D].
at::Tensor masked_sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& mask, double scale);

// Attention::prefill through at::scaled_dot_product_attention: one causal call (flash kernels
// take GQA directly) when no row is padded and there is no window, else under prefill_mask();
// padded rows come back zero.
at::Tensor sdpa_prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        std::span<const int64_t> counts, const AttentionParams& params);

}  // namespace kivi::attention
