// The "kivi" attention backend: reads KIVI views (and dense ones) without expanding the whole
// cache. On the CPU it walks the keys in blocks of whole groups, dequantizing one block at a
// time, with an online softmax across blocks (running max, sum and output), in float32.
// Prefill is plain causal attention over the prompt's own full-precision K/V, as in KIVI,
// through the same block loop.
// On the GPU: prefill goes through SDPA (flash kernels), a decode step (one token per row, no
// sliding window) through the fused decode kernel in cuda/, and a chunk over a filled cache
// (chunk(): the stored cache as stored, then the chunk's own K/V in full precision, causally)
// through the fused chunk kernel (fp16/bf16); both read the packed codes directly. What they
// cannot serve (fp32, sliding windows, other head_dims) takes the blocked loop as ATen ops.
#pragma once

#include "kivi/attention/attention.h"
#include "kivi/kivi_cache/kivi_parts.h"

namespace kivi::kivi_cache {

class KiviAttention final : public Attention {
 public:
  explicit KiviAttention(int64_t block_tokens) : block_tokens_(block_tokens) {}
  bool supports(std::string_view format) const override {
    return format == kFormat || format == kDenseFormat;
  }
  at::Tensor prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     std::span<const int64_t> counts, const AttentionParams& params) const override;
  at::Tensor decode(const at::Tensor& q, const CacheView& view, std::span<const int64_t> counts,
                    const AttentionParams& params) const override;
  // A chunk reads the cache as stored (before its append quantizes anything) and its own K/V in
  // full precision, merged in one online softmax: the research code's prefill rule.
  bool attends_chunks_before_append() const override { return true; }
  at::Tensor chunk(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const CacheView& stored, std::span<const int64_t> counts,
                   const AttentionParams& params) const override;

 private:
  int64_t block_tokens_;  // keys per block (rounded to whole quantization groups)
};

}  // namespace kivi::kivi_cache
