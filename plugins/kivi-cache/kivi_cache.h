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
#pragma once

#include <vector>

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
  // Runs fn on the whole batch if every row has the same state (and count), else row by row.
  template <class Fn>
  void for_rows(const Layer& s, std::span<const int64_t> counts, Fn fn) const;

  // Quantize x into the stores of `rows` at key group `group0` / value position `pos0`.
  void store_keys(Layer& s, Rows rows, int64_t group0, const at::Tensor& x);
  void store_values(Layer& s, Rows rows, int64_t pos0, const at::Tensor& x);
  // Values of positions [p0, p1) of `rows` from the value residual ring: [n, H, p1 - p0, D].
  at::Tensor value_window(const Layer& s, Rows rows, int64_t p0, int64_t p1) const;
  void write_value_window(Layer& s, Rows rows, int64_t p0, const at::Tensor& x);

  CacheGeometry geometry_;
  KiviOptions options_;
  std::vector<Layer> layers_;
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
