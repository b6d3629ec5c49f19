// The dense attention backends: "eager" (the plain matmul-softmax reference, softmax in
// float32 as transformers' eager_attention_forward) and "sdpa" (at::scaled_dot_product_attention,
// which picks flash / memory-efficient kernels on a GPU). Both read dense cache views.
#pragma once

#include "kivi/attention/attention.h"

namespace kivi::attention {

class EagerAttention final : public Attention {
 public:
  bool supports(std::string_view format) const override { return format == kDenseFormat; }
  at::Tensor prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     std::span<const int64_t> counts, const AttentionParams& params) const override;
  at::Tensor decode(const at::Tensor& q, const CacheView& view, std::span<const int64_t> counts,
                    const AttentionParams& params) const override;
};

class SdpaAttention final : public Attention {
 public:
  bool supports(std::string_view format) const override { return format == kDenseFormat; }
  at::Tensor prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     std::span<const int64_t> counts, const AttentionParams& params) const override;
  at::Tensor decode(const at::Tensor& q, const CacheView& view, std::span<const int64_t> counts,
                    const AttentionParams& params) const override;
};

// The stored keys/values of a dense view, cut to the longest sequence and in `dtype`:
// {k, v}, each [B, kv_heads, max(lengths), D]. Throws if the view is not dense or the batch
// differs from q's.
std::pair<at::Tensor, at::Tensor> dense_keys_values(const char* who, const at::Tensor& q,
                                                    const CacheView& view,
                                                    std::span<const int64_t> counts);

}  // namespace kivi::attention
