#include <ATen/ATen.h>

#include "backends.h"
#include "kivi/attention/dense_masks.h"
#include "kivi/util/error.h"

namespace kivi::attention {
namespace {

// softmax(q k^T * scale, masked) v with GQA; q [B, H, T, D], k/v [B, KV, S, D],
// mask [B, 1, T, S] bool. Mirrors transformers' eager_attention_forward.
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& mask, double scale) {
  const at::Tensor keys = expand_kv(k, q.size(1));
  const at::Tensor values = expand_kv(v, q.size(1));
  at::Tensor scores = at::matmul(q, keys.transpose(2, 3)) * scale;  // [B, H, T, S]
  scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
  const at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return at::matmul(probs, values);  // [B, H, T, D]
}

}  // namespace

std::pair<at::Tensor, at::Tensor> dense_keys_values(const char* who, const at::Tensor& q,
                                                    const CacheView& view,
                                                    std::span<const int64_t> counts) {
  const std::string me = std::string("attention \"") + who + "\": ";
  check(view.is_dense(), me + "cannot read a \"" + view.format + "\" cache view (dense only)");
  const int64_t batch = q.size(0);
  check(static_cast<int64_t>(view.lengths.size()) == batch,
        me + "the cache view holds " + std::to_string(view.lengths.size()) +
            " sequences, q a batch of " + std::to_string(batch));
  check(counts.empty() || static_cast<int64_t>(counts.size()) == batch,
        me + "counts has " + std::to_string(counts.size()) + " entries for a batch of " +
            std::to_string(batch));
  int64_t keys = 0;
  for (size_t b = 0; b < view.lengths.size(); ++b) {
    const int64_t n = counts.empty() ? q.size(2) : counts[b];
    check(view.lengths[b] >= n, me + "sequence " + std::to_string(b) + " holds " +
                                    std::to_string(view.lengths[b]) + " tokens, fewer than its " +
                                    std::to_string(n) + " new ones (append before decode)");
    keys = std::max(keys, view.lengths[b]);
  }
  return {view.dense.k.narrow(2, 0, keys).to(q.scalar_type()),
          view.dense.v.narrow(2, 0, keys).to(q.scalar_type())};
}

at::Tensor EagerAttention::prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   std::span<const int64_t> counts,
                                   const AttentionParams& params) const {
  check_prefill_inputs("eager", q, k, v, counts);
  const at::Tensor mask =
      prefill_mask(q.size(0), q.size(2), counts, params.sliding_window, q.device());
  return zero_padding(attend(q, k, v, mask, params.scale), counts);
}

at::Tensor EagerAttention::decode(const at::Tensor& q, const CacheView& view,
                                  std::span<const int64_t> counts,
                                  const AttentionParams& params) const {
  const auto [k, v] = dense_keys_values("eager", q, view, counts);
  const at::Tensor mask =
      decode_mask(view.lengths, counts, q.size(2), k.size(2), params.sliding_window, q.device());
  return zero_padding(attend(q, k, v, mask, params.scale), counts);
}

}  // namespace kivi::attention
