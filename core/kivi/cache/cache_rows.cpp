#include "kivi/cache/cache_rows.h"

#include <string>

#include "kivi/cache/cache_checks.h"
#include "kivi/util/error.h"

namespace kivi {

// The defaults for a cache that serves no row ranges.
void KVCache::append_range(int64_t first, int64_t layer, const at::Tensor& k, const at::Tensor& v,
                           std::span<const int64_t> new_counts) {
  throw Error("kv cache: this cache serves no row ranges (append_range of rows from " +
              std::to_string(first) + "); pass the whole batch");
}

CacheView KVCache::view_range(int64_t layer, int64_t first, int64_t n) const {
  throw Error("kv cache: this cache serves no row ranges (view_range of rows [" +
              std::to_string(first) + ", " + std::to_string(first + n) +
              ")); pass the whole batch");
}

CacheRows::CacheRows(KVCache& parent, int64_t first, int64_t n)
    : parent_(parent), first_(first), geometry_(parent.geometry()) {
  check(parent.serves_row_ranges(),
        "cache rows: the cache serves no row ranges (KVCache::serves_row_ranges)");
  check_row_range(geometry_, first, n, "cache rows");
  geometry_.max_batch = n;
}

void CacheRows::append(int64_t layer, const at::Tensor& k, const at::Tensor& v,
                       std::span<const int64_t> new_counts) {
  parent_.append_range(first_, layer, k, v, new_counts);
}

CacheView CacheRows::view(int64_t layer) const {
  return parent_.view_range(layer, first_, geometry_.max_batch);
}

int64_t CacheRows::length(int64_t seq) const {
  check(seq >= 0 && seq < geometry_.max_batch, "cache rows: sequence " + std::to_string(seq) +
                                                   " out of range [0, " +
                                                   std::to_string(geometry_.max_batch) + ")");
  return parent_.length(first_ + seq);
}

void CacheRows::reorder(std::span<const int64_t>) {
  throw Error("cache rows: reorder belongs to the whole cache, not to a range of its rows");
}

void CacheRows::truncate(int64_t, int64_t) {
  throw Error("cache rows: truncate belongs to the whole cache, not to a range of its rows");
}

void CacheRows::reset() {
  throw Error("cache rows: reset belongs to the whole cache, not to a range of its rows");
}

}  // namespace kivi
