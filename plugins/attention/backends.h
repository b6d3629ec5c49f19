// The dense attention backends: "eager" (the plain matmul-softmax reference, softmax in
// float32 as transformers' eager_attention_forward) and "sdpa" (at::scaled_dot_product_attention,
// which picks flash / memory-efficient kernels on a GPU). Both read dense cache views.
#pragma once

#include <optional>
#include <string>

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
  // fused_decode: one-token decode steps of half/bf16 caches on a GPU go through our split-K
  // kernel (cuda/dense_decode.h), which also serves rows of different lengths without a mask
  // and, unlike cuDNN's SDPA, needs no plan per key length.
  explicit SdpaAttention(bool fused_decode = true) : fused_decode_(fused_decode) {}
  bool supports(std::string_view format) const override { return format == kDenseFormat; }
  at::Tensor prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     std::span<const int64_t> counts, const AttentionParams& params) const override;
  at::Tensor decode(const at::Tensor& q, const CacheView& view, std::span<const int64_t> counts,
                    const AttentionParams& params) const override;

 private:
  bool fused_decode_;
};

// The split-K decode kernel over a dense view (cuda/dense_decode.h): q [B, Hq, 1, D] half/bf16
// on a GPU, counts 0 or 1 per row (0: zeros out). nullopt where it does not serve (the CPU, a
// build without CUDA, other dtypes or sizes), and `why` then says why when given.
std::optional<at::Tensor> fused_dense_decode(const at::Tensor& q, const CacheView& view,
                                             std::span<const int64_t> counts,
                                             const AttentionParams& params,
                                             std::string* why = nullptr);

// The stored keys/values of a dense view, cut to the longest sequence and in `dtype`:
// {k, v}, each [B, kv_heads, max(lengths), D]. Throws if the view is not dense or the batch
// differs from q's.
std::pair<at::Tensor, at::Tensor> dense_keys_values(const char* who, const at::Tensor& q,
                                                    const CacheView& view,
                                                    std::span<const int64_t> counts);

}  // namespace kivi::attention
