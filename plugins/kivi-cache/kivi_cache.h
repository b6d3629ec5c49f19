// The KIVI-quantized KV cache. Per layer it holds packed key codes with per-channel scale/min
// per token group, packed value codes with per-token scale/min per channel group, and two
// full-precision residual windows (layout: kivi/kivi_cache/kivi_parts.h). Quantized stores are
// preallocated to max_tokens or grown in chunks; windows are fixed rings.
//
// When tokens are quantized (R = residual_length, F = key flush = R or group_size if R = 0):
//   - An append of several tokens to a row (a prompt, or a chunk) leaves it in the state the
//     research code holds after a prompt of the new length (canonical_split): keys keep
//     length % F tokens in the residual, values the newest R.
//   - An append of one token (a decode step) only adds it to both windows; the flush it causes
//     (F residual keys quantized, the oldest of R + 1 values quantized) happens at the start of
//     the next append. So attention in the step sees exactly what the research code's decode
//     step sees: it attends before it quantizes.
// truncate() keeps that canonical shape: tokens that a fresh cache would hold in full
// precision but whose originals were quantized come back dequantized (see kivi-cache.md).
//
// Paged storage (geometry.pool_pages > 0, docs/paged-cache.md): the packed parts live in one pool
// of pages of options.page_tokens positions, shared by every slot through per-slot block tables
// (kivi_parts.h); the windows stay per slot. A slot takes pages as its quantized positions grow
// and gives them back on truncate and reset; reorder() forks by sharing pages (reference counts),
// and a shared page is copied before it is written (copy on write), so every operation leaves
// exactly what the contiguous cache of the same options holds. Pages whose tokens are all
// quantized are final: publish() makes them findable by their tokens, and share_prefix() gives
// a new sequence the pages of its prompt's longest published prefix. Such a sequence starts in a
// state the contiguous cache never holds (every shared token quantized, none in the windows);
// appends then keep the quantized counts from going down, and the windows refill as it grows.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "kivi/cache/block_pool.h"
#include "kivi/cache/kv_cache.h"
#include "kivi_layout.h"

namespace kivi::kivi_cache {

class KiviCache final : public KVCache {
 public:
  KiviCache(const CacheGeometry& geometry, const KiviOptions& options);

  const CacheGeometry& geometry() const override { return geometry_; }
  void append(int64_t layer, const at::Tensor& k, const at::Tensor& v,
              std::span<const int64_t> new_counts = {}) override;
  CacheView view(int64_t layer) const override;
  int64_t length(int64_t seq) const override;
  void reorder(std::span<const int64_t> beam_index) override;
  void truncate(int64_t new_length, int64_t seq = -1) override;
  void reset() override;
  MemoryStats memory() const override;
  std::vector<std::pair<std::string, at::Tensor>> owned_tensors() const override;
  CacheUsage usage() const override;
  PoolStats pool_stats() const override;
  int64_t pages_for(int64_t tokens) const override;
  void publish(int64_t seq, std::span<const int64_t> tokens) override;
  int64_t share_prefix(int64_t seq, std::span<const int64_t> tokens) override;
  bool serves_row_ranges() const override { return true; }
  void append_range(int64_t first, int64_t layer, const at::Tensor& k, const at::Tensor& v,
                    std::span<const int64_t> new_counts) override;
  CacheView view_range(int64_t layer, int64_t first, int64_t n) const override;

 private:
  struct Layer {
    KiviParts parts;              // storage tensors and per-row quantized counts
    std::vector<int64_t> length;  // [B] tokens stored
  };
  // Rows [b0, b0 + n) share one state; operations act on such slices.
  struct Rows {
    int64_t b0, n;
  };

  void check_layer(int64_t layer) const;
  void ensure_capacity(Layer& s, const LayerCapacity& needed);
  // Brings every row to canonical_split(length): performs the flushes a decode step deferred.
  void settle(Layer& s);
  void settle_keys(Layer& s);
  // Row b's value_quantized once settled.
  int64_t settled_values(const Layer& s, int64_t b) const;
  // A decode step's deferred flushes and appends in one kernel (cuda_ops.h); false: not served
  // (a CPU cache, sizes the kernel lacks, more than one value to flush), nothing but key
  // flushes done.
  bool fused_decode_append(Layer& s, const at::Tensor& k, const at::Tensor& v,
                           std::span<const int64_t> counts);
  void append_rows(Layer& s, Rows rows, const at::Tensor& k, const at::Tensor& v, int64_t count);
  void truncate_row(Layer& s, int64_t b, int64_t new_length);
  // Runs fn on the rows of `range` at once if they all have the same state (and count), else
  // row by row. counts: [max_batch] or empty.
  template <class Fn>
  void for_rows(const Layer& s, std::span<const int64_t> counts, Rows range, Fn fn) const;

  // Quantize x into the stores of `rows` at key group `group0` / value position `pos0`.
  void store_keys(Layer& s, Rows rows, int64_t group0, const at::Tensor& x);
  void store_values(Layer& s, Rows rows, int64_t pos0, const at::Tensor& x);
  // The same into first-index entries [index0, index0 + n) (rows, or one page) at local units.
  void store_keys_at(Layer& s, int64_t index0, int64_t n, int64_t group0, const at::Tensor& x);
  void store_values_at(Layer& s, int64_t index0, int64_t n, int64_t pos0, const at::Tensor& x);

  // ---- Paged storage ----
  bool paged() const { return pool_ != nullptr; }
  // Before an append to a layer (state `s`): each row holds the pages its quantized positions
  // will need and owns alone every page the append may write.
  void prepare_pages(const Layer& s, std::span<const int64_t> counts);
  // Copy on write: page i of row b becomes the row's own (every layer's contents copied).
  void own_page(int64_t b, size_t i);
  BlockPool::BlockId allocate_page(int64_t b);
  // Gives back the pages of row b past what its quantized positions use.
  void trim_pages(int64_t b);
  // Writes the rows' pages into the block table every layer's parts carry.
  void sync_table();
  // Tokens [i * page_tokens, (i + 1) * page_tokens) of `tokens`: page i's key in the pool.
  std::vector<int32_t> page_ids(std::span<const int64_t> tokens, int64_t i) const;
  // Values of positions [p0, p1) of `rows` from the value residual ring: [n, H, p1 - p0, D].
  at::Tensor value_window(const Layer& s, Rows rows, int64_t p0, int64_t p1) const;
  void write_value_window(Layer& s, Rows rows, int64_t p0, const at::Tensor& x);

  CacheGeometry geometry_;
  KiviOptions options_;
  std::vector<Layer> layers_;
  std::unique_ptr<BlockPool> pool_;
  std::vector<std::vector<BlockPool::BlockId>> pages_;  // [B][pages held], in position order
  // [B][published pages]: the chain hash of each of the row's leading pages that it published or
  // shared (a prefix of pages_[b]).
  std::vector<std::vector<uint64_t>> hashes_;
  at::Tensor table_, table_cpu_;  // [B, columns] int32 on the device and on the host
};

// What a research write-up's memory accounting leaves out for these options (CacheSpec).
std::string accounting_notes(const KiviOptions& options, at::ScalarType dtype);

class KiviCacheFactory final : public KVCacheFactory {
 public:
  explicit KiviCacheFactory(const KiviOptions& options) : options_(options) {}
  std::string view_format() const override { return std::string(kFormat); }
  std::string attention() const override { return "kivi"; }
  CacheSpec spec(const CacheGeometry& geometry) const override;
  std::unique_ptr<KVCache> create(const CacheGeometry& geometry) const override;
  const KiviOptions& options() const { return options_; }

 private:
  KiviOptions options_;
};

}  // namespace kivi::kivi_cache
