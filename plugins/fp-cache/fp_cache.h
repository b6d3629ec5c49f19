// The full-precision KV cache: K and V stored as they come (in fp16, bf16 or fp32), one
// [batch, kv_heads, capacity, head_dim] tensor per layer for each, preallocated to max_tokens
// or grown in chunks (amortized: the whole cache is never concatenated per token).
#pragma once

#include <vector>

#include "kivi/cache/kv_cache.h"

namespace kivi::fp_cache {

class FpCache final : public KVCache {
 public:
  FpCache(const CacheGeometry& geometry, at::ScalarType storage_dtype, int64_t chunk_tokens);

  const CacheGeometry& geometry() const override { return geometry_; }
  void append(int64_t layer, const at::Tensor& k, const at::Tensor& v,
              std::span<const int64_t> new_counts) override;
  CacheView view(int64_t layer) const override;
  bool serves_row_ranges() const override { return true; }
  void append_range(int64_t first, int64_t layer, const at::Tensor& k, const at::Tensor& v,
                    std::span<const int64_t> new_counts) override;
  CacheView view_range(int64_t layer, int64_t first, int64_t n) const override;
  int64_t length(int64_t seq) const override;
  void reorder(std::span<const int64_t> beam_index) override;
  void truncate(int64_t new_length, int64_t seq) override;
  void reset() override;
  MemoryStats memory() const override;
  std::vector<std::pair<std::string, at::Tensor>> owned_tensors() const override;

 private:
  void ensure_capacity(int64_t layer, int64_t tokens);
  void check_layer(int64_t layer) const;

  CacheGeometry geometry_;
  at::ScalarType storage_dtype_;
  int64_t chunk_tokens_;
  std::vector<at::Tensor> keys_;               // per layer: [batch, kv_heads, capacity, head_dim]
  std::vector<at::Tensor> values_;             // per layer: [batch, kv_heads, capacity, head_dim]
  std::vector<std::vector<int64_t>> lengths_;  // [layer][batch] tokens stored
};

class FpCacheFactory final : public KVCacheFactory {
 public:
  FpCacheFactory(at::ScalarType storage_dtype, int64_t chunk_tokens)
      : storage_dtype_(storage_dtype), chunk_tokens_(chunk_tokens) {}
  std::string view_format() const override { return std::string(kDenseFormat); }
  std::string attention() const override { return "sdpa"; }
  CacheSpec spec(const CacheGeometry& geometry) const override;
  std::unique_ptr<KVCache> create(const CacheGeometry& geometry) const override;

 private:
  at::ScalarType storage_dtype_;
  int64_t chunk_tokens_;
};

}  // namespace kivi::fp_cache
