// The KIVI cache's options and the sizes they imply, shared by the cache, its CacheSpec and
// the memory table, so planned bytes and held bytes come from one place.
#pragma once

#include <cstdint>
#include <string>

#include "kivi/cache/cache_types.h"
#include "kivi/kivi_cache/kivi_parts.h"

namespace kivi::kivi_cache {

struct KiviOptions {
  int64_t k_bits = 2;             // 2, 4, 8 or 16 (16 = keys not quantized)
  int64_t v_bits = 2;             // 2, 4, 8 or 16
  int64_t group_size = 32;        // tokens per key group, channels per value group
  int64_t residual_length = 128;  // R: a multiple of group_size, or 0
  int64_t chunk_tokens = 256;     // growth step when max_tokens is 0
  int64_t page_tokens = 128;      // tokens per page of paged storage (CacheGeometry::pool_pages)

  bool quantize_keys() const { return k_bits < 16; }
  bool quantize_values() const { return v_bits < 16; }
  // Keys are quantized this many tokens at a time: R, or one group when R is 0.
  int64_t key_flush() const { return residual_length > 0 ? residual_length : group_size; }
  std::string description() const;
};

// Throws kivi::Error naming the option when `options` cannot serve `geometry`.
void check_options(const KiviOptions& options, const CacheGeometry& geometry);

// The state a cache holds for a sequence of `length` tokens between forward passes, which is
// what the research code holds after a prompt of that length and after every decode step:
// keys keep length % R tokens in full precision, values the newest R.
struct SequenceSplit {
  int64_t key_quantized = 0;
  int64_t value_quantized = 0;
};
SequenceSplit canonical_split(const KiviOptions& options, int64_t length);

// Storage capacities of one layer for one sequence slot, in the units of the third dimension
// of each tensor (kivi_parts.h). With max_tokens == 0 the quantized stores start empty and grow.
struct LayerCapacity {
  int64_t key_groups = 0;    // quantized key groups
  int64_t key_slots = 0;     // key residual slots (every token at 16 bits)
  int64_t value_tokens = 0;  // quantized value tokens
  int64_t value_slots = 0;   // value residual slots (every token at 16 bits)
};
LayerCapacity preallocated_capacity(const KiviOptions& options, int64_t max_tokens);

// Bytes one sequence slot of one layer holds at `capacity`, by component.
struct LayerBytes {
  int64_t codes = 0;
  int64_t scales = 0;  // scales and minima
  int64_t residual = 0;
  int64_t total() const { return codes + scales + residual; }
};
LayerBytes layer_bytes(const KiviOptions& options, const CacheGeometry& geometry,
                       const LayerCapacity& capacity);

// Exact bytes of a cache preallocated for one sequence of `tokens` tokens, all layers.
int64_t bytes_per_sequence(const KiviOptions& options, const CacheGeometry& geometry,
                           int64_t tokens);

// Paged storage: the pages (page_tokens tokens each) of one layer hold the packed parts of
// page_tokens positions; a slot holds its two windows beside them.
LayerCapacity page_capacity(const KiviOptions& options);
LayerCapacity slot_capacity(const KiviOptions& options);
// Columns of a slot's block table: enough pages for max_tokens positions (1 when max_tokens is
// 0: the table grows with the longest sequence).
int64_t table_columns(const KiviOptions& options, int64_t max_tokens);

}  // namespace kivi::kivi_cache
