// The attention interface. Plugins of kind "attention" make Attention objects ("eager" is the
// plain reference, "sdpa" uses at::scaled_dot_product_attention); the KIVI cache plugin brings
// one that reads its packed view. Backends are stateless apart from their options, so one
// object serves every layer.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <ATen/Tensor.h>

#include "kivi/cache/cache_types.h"

namespace kivi {

struct AttentionParams {
  double scale = 1.0;          // softmax scale, usually 1/sqrt(head_dim)
  int64_t sliding_window = 0;  // > 0: a token sees only the last `sliding_window` positions
  // decode() only, optional: a [batch, q_heads, T, head_dim] contiguous tensor of q's dtype
  // and device where the backend may write its result and return it (decode graphs pass their
  // input buffer, sparing a copy per layer). A backend may ignore it and return a new tensor.
  at::Tensor out;
};

class Attention {
 public:
  static constexpr const char* kPluginKind = "attention";
  virtual ~Attention() = default;

  // Whether decode() and chunk() can read views of this format (CacheView::format, e.g.
  // "dense/1"); checked when the config is read, so a mismatch fails at start-up rather than
  // at the first token.
  virtual bool supports(std::string_view format) const = 0;

  // Causal self-attention among new tokens only, in full precision (KIVI's prefill: the
  // prompt attends over its own unquantized K/V).
  //   q: [batch, q_heads, T, head_dim]; k, v: [batch, kv_heads, T, head_dim]; q_heads is a
  //   multiple of kv_heads (GQA). counts: [batch] valid tokens per row (right-padded; empty =
  //   all T). Returns [batch, q_heads, T, head_dim] in q's dtype; padded rows are zero.
  virtual at::Tensor prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             std::span<const int64_t> counts,
                             const AttentionParams& params) const = 0;

  // New tokens attending over everything the cache holds for their layer, which already
  // includes them (append first). Token t of row b sits at position
  // view.lengths[b] - counts[b] + t and sees every position up to its own.
  //   q: [batch, q_heads, T, head_dim]; counts as above. Returns [batch, q_heads, T, head_dim].
  virtual at::Tensor decode(const at::Tensor& q, const CacheView& view,
                            std::span<const int64_t> counts,
                            const AttentionParams& params) const = 0;

  // Chunks over a filled cache. A cache that changes stored tokens when it appends (KIVI
  // quantizes a chunk's own tokens, and residual ones before them) must be read before the
  // append: a backend that returns true here gets chunk() for every forward pass of more than
  // one token over a non-empty cache, with `stored` taken before the append, which follows.
  // The default (false) appends first and calls decode(), exact for full-precision caches.
  virtual bool attends_chunks_before_append() const { return false; }
  // New tokens attending to everything `stored` holds, as it is stored, and causally to their
  // own k/v in full precision; token t of row b sits at position stored.lengths[b] + t.
  //   q, k, v, counts: as prefill(). Returns [batch, q_heads, T, head_dim].
  virtual at::Tensor chunk(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const CacheView& stored, std::span<const int64_t> counts,
                           const AttentionParams& params) const;
};

}  // namespace kivi
