// CacheRows: slots [first, first + n) of a KVCache presented as a cache of n rows, so that a
// forward pass runs over those rows alone (CausalLM::forward takes it like any cache of batch n).
// A scheduler uses it to feed one prefilling row a large chunk while the other rows wait,
// instead of padding every row of the batch to that chunk (docs/paged-cache.md).
//
// Appends and views go to the parent's append_range/view_range, lengths to its rows; what
// changes the rows' membership or the whole cache (reorder, truncate, reset) is refused: those
// belong to the parent. The parent must serve row ranges (KVCache::serves_row_ranges) and
// outlive the proxy; views follow the parent's invalidation rules.
#pragma once

#include <cstdint>

#include "kivi/cache/kv_cache.h"

namespace kivi {

class CacheRows final : public KVCache {
 public:
  // Throws kivi::Error when the parent serves no row ranges or the range is outside its slots.
  CacheRows(KVCache& parent, int64_t first, int64_t n);

  const CacheGeometry& geometry() const override { return geometry_; }
  void append(int64_t layer, const at::Tensor& k, const at::Tensor& v,
              std::span<const int64_t> new_counts = {}) override;
  CacheView view(int64_t layer) const override;
  int64_t length(int64_t seq) const override;
  void reorder(std::span<const int64_t> beam_index) override;
  void truncate(int64_t new_length, int64_t seq = -1) override;
  void reset() override;
  // The parent's: storage is not divided by rows.
  MemoryStats memory() const override { return parent_.memory(); }
  std::vector<std::pair<std::string, at::Tensor>> owned_tensors() const override {
    return parent_.owned_tensors();
  }
  CacheUsage usage() const override { return parent_.usage(); }

  int64_t first() const { return first_; }

 private:
  KVCache& parent_;
  int64_t first_;
  CacheGeometry geometry_;  // the parent's, with max_batch = n
};

}  // namespace kivi
