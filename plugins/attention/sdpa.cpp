#include <ATen/ATen.h>

#include "backends.h"
#include "kivi/attention/dense_masks.h"

namespace kivi::attention {
namespace {

bool all_equal(std::span<const int64_t> values, int64_t value) {
  for (int64_t v : values)
    if (v != value) return false;
  return true;
}

}  // namespace

at::Tensor SdpaAttention::prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  std::span<const int64_t> counts,
                                  const AttentionParams& params) const {
  check_prefill_inputs("sdpa", q, k, v, counts);
  return sdpa_prefill(q, k, v, counts, params);
}

at::Tensor SdpaAttention::decode(const at::Tensor& q, const CacheView& view,
                                 std::span<const int64_t> counts,
                                 const AttentionParams& params) const {
  if (fused_decode_)
    if (std::optional<at::Tensor> out = fused_dense_decode(q, view, counts, params)) return *out;
  const auto [k, v] = dense_keys_values("sdpa", q, view, counts);
  const int64_t tokens = q.size(2), keys = k.size(2);
  if (tokens == 1 && all_equal(counts, 1) && all_equal(view.lengths, keys) &&
      (params.sliding_window == 0 || params.sliding_window >= keys)) {
    // One new token per sequence over equally long histories: it sees every stored key.
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/false, params.scale,
                                            /*enable_gqa=*/true);
  }
  // Rows of different lengths, or idle ones (a server's batch): ATen's flash path cannot take
  // them, and the masked SDPA below first copies K/V to every query head (4.8 GB per layer for 9
  // rows of 33K keys at Llama-3.1-8B's 32/8 heads). The fused kernel needs no mask and no copy.
  if (!fused_decode_ && tokens == 1)
    if (std::optional<at::Tensor> out = fused_dense_decode(q, view, counts, params)) return *out;
  const at::Tensor mask =
      decode_mask(view.lengths, counts, tokens, keys, params.sliding_window, q.device());
  return zero_padding(masked_sdpa(q, k, v, mask, params.scale), counts);
}

}  // namespace kivi::attention
