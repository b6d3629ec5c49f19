#include "kivi/attention/dense_masks.h"

#include <ATen/ATen.h>

#include "kivi/util/error.h"

namespace kivi::attention {
namespace {

at::Tensor host_longs(std::span<const int64_t> values, const at::Device& device) {
  return at::tensor(std::vector<int64_t>(values.begin(), values.end()), at::kLong).to(device);
}

// allowed [B, T, S] -> with key 0 opened for padded query rows, as [B, 1, T, S].
at::Tensor finish(at::Tensor allowed, const at::Tensor& query_valid) {
  // query_valid: [B, T, 1]
  if (allowed.size(2) > 0) {
    at::Tensor first = allowed.narrow(2, 0, 1);
    first.logical_or_(query_valid.logical_not());
  }
  return allowed.unsqueeze(1);
}

}  // namespace

std::vector<int64_t> resolve_counts(std::span<const int64_t> counts, int64_t batch,
                                    int64_t tokens) {
  if (counts.empty()) return std::vector<int64_t>(batch, tokens);
  return {counts.begin(), counts.end()};
}

at::Tensor prefill_mask(int64_t batch, int64_t tokens, std::span<const int64_t> counts,
                        int64_t window, const at::Device& device) {
  const auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  const at::Tensor q = at::arange(tokens, opts).view({1, tokens, 1});  // query index
  const at::Tensor s = at::arange(tokens, opts).view({1, 1, tokens});  // key index
  const at::Tensor n =
      host_longs(resolve_counts(counts, batch, tokens), device).view({batch, 1, 1});
  at::Tensor allowed = (s <= q).logical_and(s < n);  // [B, T, T]
  if (window > 0) allowed = allowed.logical_and(s > q - window);
  return finish(allowed.contiguous(), q < n);
}

at::Tensor decode_mask(std::span<const int64_t> lengths, std::span<const int64_t> counts,
                       int64_t tokens, int64_t keys, int64_t window, const at::Device& device) {
  const int64_t batch = static_cast<int64_t>(lengths.size());
  const auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  const at::Tensor len = host_longs(lengths, device).view({batch, 1, 1});
  const at::Tensor n =
      host_longs(resolve_counts(counts, batch, tokens), device).view({batch, 1, 1});
  const at::Tensor t = at::arange(tokens, opts).view({1, tokens, 1});
  const at::Tensor s = at::arange(keys, opts).view({1, 1, keys});
  const at::Tensor position = len - n + t;  // [B, T, 1] absolute position of each query
  at::Tensor allowed = (s <= position).logical_and(s < len);
  if (window > 0) allowed = allowed.logical_and(s > position - window);
  return finish(allowed.contiguous(), t < n);
}

at::Tensor expand_kv(const at::Tensor& kv, int64_t q_heads) {
  const int64_t kv_heads = kv.size(1);
  if (kv_heads == q_heads) return kv;
  const int64_t groups = q_heads / kv_heads;
  return kv.unsqueeze(2)
      .expand({kv.size(0), kv_heads, groups, kv.size(2), kv.size(3)})
      .reshape({kv.size(0), q_heads, kv.size(2), kv.size(3)});
}

at::Tensor zero_padding(const at::Tensor& out, std::span<const int64_t> counts) {
  const int64_t batch = out.size(0), tokens = out.size(2);
  bool padded = false;
  for (int64_t c : counts) padded = padded || c < tokens;
  if (counts.empty() || !padded) return out;
  const auto opts = at::TensorOptions().dtype(at::kLong).device(out.device());
  const at::Tensor n = host_longs(counts, out.device()).view({batch, 1, 1, 1});
  const at::Tensor t = at::arange(tokens, opts).view({1, 1, tokens, 1});
  return out.masked_fill((t >= n), 0);
}

void check_prefill_inputs(const char* who, const at::Tensor& q, const at::Tensor& k,
                          const at::Tensor& v, std::span<const int64_t> counts) {
  const std::string me = std::string("attention \"") + who + "\": ";
  check(q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes(),
        me + "expected q [B, heads, T, D] and k, v [B, kv_heads, T, D] of one shape");
  check(k.size(0) == q.size(0) && k.size(2) == q.size(2) && k.size(3) == q.size(3),
        me + "q and k disagree on batch, tokens or head_dim");
  check(q.size(1) % k.size(1) == 0, me + "q heads (" + std::to_string(q.size(1)) +
                                        ") are not a multiple of kv heads (" +
                                        std::to_string(k.size(1)) + ")");
  check(counts.empty() || static_cast<int64_t>(counts.size()) == q.size(0),
        me + "counts has " + std::to_string(counts.size()) + " entries for a batch of " +
            std::to_string(q.size(0)));
}

at::Tensor masked_sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& mask, double scale) {
  return at::scaled_dot_product_attention(q, expand_kv(k, q.size(1)), expand_kv(v, q.size(1)), mask,
                                          0.0, /*is_causal=*/false, scale);
}

at::Tensor sdpa_prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        std::span<const int64_t> counts, const AttentionParams& params) {
  const int64_t tokens = q.size(2);
  bool padded = false;
  for (int64_t c : counts) padded = padded || c != tokens;
  if (params.sliding_window == 0 && !padded) {
    // No padding, no window: the plain causal case that flash kernels take.
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, params.scale,
                                            /*enable_gqa=*/true);
  }
  const at::Tensor mask =
      prefill_mask(q.size(0), tokens, counts, params.sliding_window, q.device());
  return zero_padding(masked_sdpa(q, k, v, mask, params.scale), counts);
}

}  // namespace kivi::attention
