// The "fp8" KV cache: keys and values in float8 e4m3 with per-token, per-head scales
// (include/fp8_cache/fp8_format.h), and the "fp8" attention that reads its views.
#pragma once

#include <vector>

#include "fp8_cache/fp8_format.h"
#include "kivi/attention/attention.h"
#include "kivi/cache/kv_cache.h"

namespace fp8_cache {

class Fp8Cache final : public kivi::KVCache {
 public:
  explicit Fp8Cache(const kivi::CacheGeometry& geometry);
  const kivi::CacheGeometry& geometry() const override { return geometry_; }
  void append(int64_t layer, const at::Tensor& k, const at::Tensor& v,
              std::span<const int64_t> new_counts = {}) override;
  kivi::CacheView view(int64_t layer) const override;
  int64_t length(int64_t seq) const override { return lengths_.at(0).at(seq); }
  void reorder(std::span<const int64_t> beam_index) override;
  void truncate(int64_t new_length, int64_t seq = -1) override;
  void reset() override;
  kivi::MemoryStats memory() const override;
  std::vector<std::pair<std::string, at::Tensor>> owned_tensors() const override;
  kivi::CacheUsage usage() const override;

 private:
  void ensure_capacity(int64_t layer, int64_t tokens);
  kivi::CacheGeometry geometry_;
  std::vector<Fp8Parts> layers_;
  std::vector<std::vector<int64_t>> lengths_;  // [layer][batch]
};

class Fp8CacheFactory final : public kivi::KVCacheFactory {
 public:
  std::string view_format() const override { return std::string(kFormat); }
  std::string attention() const override { return "fp8"; }
  kivi::CacheSpec spec(const kivi::CacheGeometry& geometry) const override;
  std::unique_ptr<kivi::KVCache> create(const kivi::CacheGeometry& geometry) const override {
    return std::make_unique<Fp8Cache>(geometry);
  }
};

// Prefill through SDPA over the new tokens' own K/V; decode dequantizes the stored tokens
// (torch ops: CPU or GPU) and attends under the decode mask.
class Fp8Attention final : public kivi::Attention {
 public:
  bool supports(std::string_view format) const override { return format == kFormat; }
  at::Tensor prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     std::span<const int64_t> counts,
                     const kivi::AttentionParams& params) const override;
  at::Tensor decode(const at::Tensor& q, const kivi::CacheView& view,
                    std::span<const int64_t> counts,
                    const kivi::AttentionParams& params) const override;
};

// Stored tokens of every row back in `dtype`: {k, v}, each [B, H, keys, D].
std::pair<at::Tensor, at::Tensor> dequantize(const Fp8Parts& parts, int64_t keys,
                                             at::ScalarType dtype);

}  // namespace fp8_cache
