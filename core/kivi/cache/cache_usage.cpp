#include "kivi/cache/cache_usage.h"

#include "kivi/util/error.h"

namespace kivi {
namespace {

int64_t element_bytes(const at::Tensor& t) { return t.defined() ? static_cast<int64_t>(t.element_size()) : 0; }

}  // namespace

CacheUsage cache_usage(const KVCache& cache) {
  const CacheGeometry& g = cache.geometry();
  const int64_t heads = g.num_kv_heads, dim = g.head_dim;
  CacheUsage u;
  u.sequences = g.max_batch;
  for (int64_t layer = 0; layer < g.num_layers; ++layer) {
    const CacheView view = cache.view(layer);
    for (size_t b = 0; b < view.lengths.size(); ++b) {
      const int64_t length = view.lengths[b];
      if (layer == 0) u.tokens += length;
      u.elements += 2 * length * heads * dim;
      if (view.kind == CacheViewKind::kDense) {
        const int64_t element = element_bytes(view.dense.k);
        u.full_element_bits = 8 * element;
        u.full_bytes += 2 * length * heads * dim * element;
        continue;
      }
      // kivi_view.h: keys [0, key_quantized) in groups of group_size tokens per channel, values
      // [0, value_quantized) in groups of group_size channels per token, each group with one
      // scale and one minimum; the rest of each side in its full-precision residual.
      const KiviParts& p = view.kivi;
      const int64_t kq = p.key_quantized.at(b), vq = p.value_quantized.at(b);
      u.key_bits = p.k_bits;
      u.value_bits = p.v_bits;
      u.quantizing = u.quantizing || p.k_bits < 16 || p.v_bits < 16;
      if (layer == 0) {
        u.key_quantized += kq;
        u.value_quantized += vq;
      }
      const int64_t residual_element = element_bytes(p.key_residual);
      u.full_element_bits = 8 * residual_element;
      u.full_bytes += ((length - kq) + (length - vq)) * heads * dim * residual_element;
      if (kq > 0) {
        check(kq % p.group_size == 0, "cache_usage: key_quantized = " + std::to_string(kq) +
                                          " is not a whole number of groups of " + std::to_string(p.group_size));
        u.code_bytes += kq * heads * dim * p.k_bits / 8;
        u.scale_bytes += 2 * (kq / p.group_size) * heads * dim * element_bytes(p.key_scale);
      }
      if (vq > 0) {
        u.code_bytes += vq * heads * dim * p.v_bits / 8;
        u.scale_bytes += 2 * vq * heads * (dim / p.group_size) * element_bytes(p.value_scale);
      }
    }
  }
  return u;
}

}  // namespace kivi
