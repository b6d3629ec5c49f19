// The KIVI cache's view format, "kivi/2": the packed parts of one layer, as attention kernels
// read them. Owned by the kivi-cache plugin (installed as <kivi/kivi_cache/kivi_parts.h>); the
// core sees only the format id and an opaque payload: a view with CacheView::format == kFormat
// carries a KiviParts, read with view.payload_as<KiviParts>(kFormat). Change kFormat's version
// with any change to this struct or its meaning.
//
// Per sequence b, with L = lengths[b] tokens stored:
//   keys:   positions [0, key_quantized[b]) are quantized per channel in groups of group_size
//           consecutive tokens; positions [key_quantized[b], L) are in the key residual.
//   values: positions [0, value_quantized[b]) are quantized per token in groups of group_size
//           consecutive channels; positions [value_quantized[b], L) are in the value residual.
// Key residual: the token at position p sits in slot p - key_quantized[b] (keys flush the
// whole window at once, so it restarts at slot 0). Value residual: a ring, the token at
// position p sits in slot p % value_residual.size(2), so the per-token slide moves no data.
// At 16 bits a side's residual holds every token (its quantized count stays 0).
//
// Codes are unsigned, packed into int32 words from the low bits up: code j of a word occupies
// bits [j * bits, (j + 1) * bits), 32 / bits codes per word (16 at 2 bits, 8 at 4, 4 at 8), the
// order of the research code (jy-yuan/KIVI quant/new_pack.py). Dequantized x = code * scale + min.
//
// Where the packed tokens live: contiguous per sequence (block_table undefined), the first index
// of every packed tensor is the sequence; paged (a paged cache), it is a page of a pool shared by
// every sequence, and position p of sequence b is token p % page_tokens of page
// block_table[b][p / page_tokens]. The residual windows are per sequence either way.
//
// Dimensions: B = max_batch, H = kv_heads, D = head_dim, G = group_size, Wk = G * k_bits / 32,
// Wv = D * v_bits / 32, N = B (contiguous) or the pool's pages; capacities (third dimension) are
// at least what lengths need, or page_tokens (keys: page_tokens / G groups) when paged.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include <ATen/Tensor.h>

#include "kivi/cache/cache_types.h"

namespace kivi::kivi_cache {

inline constexpr std::string_view kFormat = "kivi/2";

struct KiviParts {
  int64_t k_bits = 16;  // 2, 4, 8, or 16 (keys not quantized: key codes undefined)
  int64_t v_bits = 16;  // 2, 4, 8, or 16 (values not quantized: value codes undefined)
  int64_t group_size = 32;
  int64_t residual_length = 128;  // R; during a decode step the windows may hold R keys and
                                  // R + 1 values (the step's flush is deferred to the next append)

  // Keys: for each token group, each channel's G codes packed along tokens, so a decode
  // kernel reads one channel of a group as Wk consecutive words.
  at::Tensor key_codes;     // [N, H, key_groups, D, Wk] int32
  at::Tensor key_scale;     // [N, H, key_groups, D] model dtype
  at::Tensor key_min;       // [N, H, key_groups, D] model dtype
  at::Tensor key_residual;  // [B, H, key_slots, D] model dtype

  // Values: per token, the D codes packed along channels.
  at::Tensor value_codes;     // [N, H, value_tokens, Wv] int32
  at::Tensor value_scale;     // [N, H, value_tokens, D / G] model dtype
  at::Tensor value_min;       // [N, H, value_tokens, D / G] model dtype
  at::Tensor value_residual;  // [B, H, value_slots, D] model dtype

  std::vector<int64_t> key_quantized;    // [B] tokens whose keys are quantized
  std::vector<int64_t> value_quantized;  // [B] tokens whose values are quantized

  // Paged storage only (both undefined when contiguous). Entries past a sequence's last page
  // are unspecified.
  at::Tensor block_table;      // [B, pages] int32 on the parts' device
  at::Tensor block_table_cpu;  // the same on the host, for the CPU read path
  int64_t page_tokens = 0;     // a power of two and a multiple of G; 0 when contiguous

  bool paged() const { return block_table.defined(); }
};

// The parts a "kivi/2" view carries (throws, naming both formats, for any other view).
inline const KiviParts& kivi_parts(const CacheView& view) {
  return view.payload_as<KiviParts>(kFormat);
}

}  // namespace kivi::kivi_cache
