// The KV cache interface. A KVCache stores, per layer and per sequence, the rotated keys and
// the values of every token seen so far; the model appends to it layer by layer and attention
// reads it through a CacheView. Plugins of kind "kv_cache" make KVCacheFactory objects; the
// factory makes caches for a geometry.
//
// Ownership: a KVCache owns all its storage (on geometry.device). Views share that storage and
// are invalidated by the next append/reorder/truncate/reset.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kivi/cache/cache_types.h"
#include "kivi/cache/cache_usage.h"

namespace kivi {

class KVCache {
 public:
  virtual ~KVCache() = default;

  virtual const CacheGeometry& geometry() const = 0;

  // Stores new tokens of one layer for every sequence slot.
  //   k, v: [max_batch, kv_heads, new_tokens, head_dim], geometry dtype and device, keys already
  //         rotated. Rows are right-padded: sequence b's valid tokens are the first
  //         new_counts[b] of the new_tokens.
  //   new_counts: [max_batch] on the host; empty means every row has new_tokens valid tokens.
  // Layers are appended independently; between forward passes all layers hold equal lengths.
  // Throws kivi::Error if a sequence would exceed max_tokens (when set).
  virtual void append(int64_t layer, const at::Tensor& k, const at::Tensor& v,
                      std::span<const int64_t> new_counts = {}) = 0;

  // What attention reads for `layer`, including tokens appended to it just now.
  virtual CacheView view(int64_t layer) const = 0;

  // Tokens stored for sequence `seq` in layer 0 (the position the next token of `seq` takes).
  virtual int64_t length(int64_t seq) const = 0;

  // Beam search: slot i takes what slot beam_index[i] held, in every stored component.
  // beam_index: max_batch entries in [0, max_batch).
  virtual void reorder(std::span<const int64_t> beam_index) = 0;

  // Keeps at most `new_length` tokens of sequence `seq` (all sequences if seq < 0), in every
  // layer; any position is valid, including inside a quantization group.
  virtual void truncate(int64_t new_length, int64_t seq = -1) = 0;

  // Empties every sequence; storage may be kept for reuse (memory() says what is held).
  virtual void reset() = 0;

  // Bytes really held, by component.
  virtual MemoryStats memory() const = 0;

  // Every tensor the cache owns, named; for honest-memory checks and debugging.
  virtual std::vector<std::pair<std::string, at::Tensor>> owned_tensors() const = 0;

  // Paged storage: the state of the page pool, and the pages one sequence of `tokens` tokens
  // holds (what a scheduler admits against); a contiguous cache returns zeros.
  virtual PoolStats pool_stats() const { return {}; }
  virtual int64_t pages_for(int64_t tokens) const { return 0; }

  // Prefix sharing (paged caches; a contiguous one shares nothing).
  // publish: makes the final pages of sequence `seq` (every token quantized, never written
  // again) findable under the tokens they hold; `tokens` are the sequence's tokens from position
  // 0, at least as many as it stores. Cheap when nothing new is final, so callers may call it
  // after every step.
  virtual void publish(int64_t seq, std::span<const int64_t> tokens) {}
  // share_prefix: an empty sequence `seq` that is about to take `tokens` takes instead the
  // published pages holding their longest prefix that it may use (its own prefill still
  // quantizes what its full-precision windows must hold); returns the tokens it now holds, whose
  // feeding it skips (0: none).
  virtual int64_t share_prefix(int64_t seq, std::span<const int64_t> tokens) { return 0; }

  // What the stored tokens use, by component (cache_usage.h). The default reads dense views
  // (dense_cache_usage); a cache of another format says what its own tokens use.
  virtual CacheUsage usage() const;

  // Row ranges: a forward pass over slots [first, first + n) alone (a scheduler prefilling one
  // row in a large chunk while others wait), read through a CacheRows (cache_rows.h) that
  // presents the range as a cache of n rows. A cache that serves them stores and reads exactly
  // what append()/view() of the whole batch would with zero counts outside the range.
  virtual bool serves_row_ranges() const { return false; }
  //   k, v: [n, kv_heads, new_tokens, head_dim]; new_counts: [n] or empty (all new_tokens).
  virtual void append_range(int64_t first, int64_t layer, const at::Tensor& k, const at::Tensor& v,
                            std::span<const int64_t> new_counts);
  // The view of rows [first, first + n) of `layer`: lengths and per-row tensors narrowed.
  virtual CacheView view_range(int64_t layer, int64_t first, int64_t n) const;
};

// Made by a "kv_cache" plugin from its options; makes caches and plans their cost.
class KVCacheFactory {
 public:
  static constexpr const char* kPluginKind = "kv_cache";
  virtual ~KVCacheFactory() = default;

  // The format of the views the caches produce (CacheView::format), so that an Attention
  // backend can be checked against it when the config is read.
  virtual std::string view_format() const = 0;
  // The attention plugin that reads those views: what `[attention] backend` defaults to.
  virtual std::string attention() const = 0;
  virtual CacheSpec spec(const CacheGeometry& geometry) const = 0;
  virtual std::unique_ptr<KVCache> create(const CacheGeometry& geometry) const = 0;
};

}  // namespace kivi
