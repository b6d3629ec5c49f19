#include "kivi/cache/cache_usage.h"

#include "kivi/cache/kv_cache.h"
#include "kivi/util/error.h"

namespace kivi {

CacheUsage KVCache::usage() const {
  return dense_cache_usage(*this);
}

CacheUsage cache_usage(const KVCache& cache) {
  return cache.usage();
}

CacheUsage dense_cache_usage(const KVCache& cache) {
  const CacheGeometry& g = cache.geometry();
  const int64_t heads = g.num_kv_heads, dim = g.head_dim;
  CacheUsage u;
  u.sequences = g.max_batch;
  for (int64_t layer = 0; layer < g.num_layers; ++layer) {
    const CacheView view = cache.view(layer);
    check(view.is_dense(), "cache usage: layer " + std::to_string(layer) +
                               " has a view of format \"" + view.format +
                               "\"; a cache of that format must override KVCache::usage()");
    const int64_t element =
        view.dense.k.defined() ? static_cast<int64_t>(view.dense.k.element_size()) : 0;
    u.full_element_bits = 8 * element;
    for (const int64_t length : view.lengths) {
      if (layer == 0) u.tokens += length;
      u.elements += 2 * length * heads * dim;
      u.full_bytes += 2 * length * heads * dim * element;
    }
  }
  return u;
}

}  // namespace kivi
