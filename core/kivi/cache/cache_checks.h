// Argument checks every KVCache implementation shares, with messages that name the cache,
// the argument and the shape or value expected.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "kivi/cache/cache_types.h"

namespace kivi {

void check_geometry(const CacheGeometry& geometry);
// For a cache without paged storage: throws, naming `who`, when geometry.pool_pages > 0.
void check_not_paged(const CacheGeometry& geometry, const std::string& who);
// k, v: [max_batch, kv_heads, new_tokens, head_dim] on geometry.device; new_counts empty or
// [max_batch] values in [0, new_tokens].
void check_append_inputs(const CacheGeometry& geometry, const at::Tensor& k, const at::Tensor& v,
                         std::span<const int64_t> new_counts, const std::string& who);
// Rows [first, first + n) of a row-range operation (KVCache::view_range): n > 0 slots within
// geometry.max_batch.
void check_row_range(const CacheGeometry& geometry, int64_t first, int64_t n,
                     const std::string& who);
// KVCache::append_range's arguments: k, v [n, kv_heads, new_tokens, head_dim] for rows
// [first, first + n), new_counts empty or [n]. Returns n.
int64_t check_range_append_inputs(const CacheGeometry& geometry, int64_t first, const at::Tensor& k,
                                  const at::Tensor& v, std::span<const int64_t> new_counts,
                                  const std::string& who);
// beam_index: [max_batch] values in [0, max_batch).
void check_beam_index(const CacheGeometry& geometry, std::span<const int64_t> beam_index,
                      const std::string& who);

}  // namespace kivi
