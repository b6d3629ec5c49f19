// Where each code sits in the KIVI cache's packed storage: the "tile order", chosen so that the
// tensor-core decode kernel (cuda/decode_attention_mma.cuh) loads every code it needs with
// 16-byte loads, each word feeding its MMA fragments with no shuffles, and turns two codes into
// an fp16/bf16 pair with one LOP3 and one HFMA2 (magic-number conversion).
//
// The storage tensors keep the shapes of kivi_parts.h (same bytes); only the order of codes
// inside a block differs from the research code's packing (jy-yuan/KIVI quant/new_pack.py),
// which quantize.h produces and tile_order_* converts from and to:
//
// Keys, one block per (sequence, head, token group): D x G codes in D * G * bits / 32 words.
//   Tile T (tokens [32T, 32T + 32) of the group) fills words [T * D * bits, (T + 1) * D * bits);
//   in it, MMA lane l = 4 g + c owns D * bits / 32 consecutive words. The lane's codes are
//   pairs i = (2 kt + hi) * 4 + nt of (channel 16 kt + 8 hi + 2c, channel + 1) at token 8 nt + g;
//   pair i lies at word i / (16 / bits), the even channel's code in the low 16 bits and the odd
//   channel's in the high 16 bits, both at bit (i % (16 / bits)) * bits of their half.
//   (m16n8k16's B fragment of lane (g, c) is exactly such a channel pair at token column g.)
// Values, one block per (sequence, head, token): the token's D codes in D * bits / 32 words,
//   channel d = 8 nt + g stored as code j = g * (D / 8) + nt in the research packing of a row.
//   So MMA lane g finds its channels {g, 8 + g, 16 + g, ...} of a token in one run of
//   D * bits / 8 bits, and two tokens' runs become B fragments with one byte permute.
#pragma once

#include <cstdint>

#include <ATen/Tensor.h>

namespace kivi::kivi_cache {

// The cache stores keys in tile order when the group is whole 32-token tiles and head_dim whole
// 16-channel MMA k-tiles, values when head_dim is a multiple of 8; otherwise in the research
// packing (the fused kernel then does not serve the cache: decode_supported()).
inline bool keys_in_tile_order(int64_t dim, int64_t group_size) {
  return dim % 16 == 0 && group_size % 32 == 0;
}
inline bool values_in_tile_order(int64_t dim) {
  return dim % 8 == 0;
}

struct CodeSlot {
  int64_t word;  // within the block
  int bit;       // lowest bit of the code in that word
};

// Key code of channel d, token t of a group (t < group size) for head_dim `dim`.
inline CodeSlot key_code_slot(int64_t d, int64_t t, int64_t dim, int64_t bits) {
  const int64_t tile = t / 32, g = t % 8, nt = (t % 32) / 8;
  const int64_t kt = d / 16, hi = (d % 16) / 8, c = (d % 8) / 2, odd = d % 2;
  const int64_t pair = (2 * kt + hi) * 4 + nt, per_half = 16 / bits;
  const int64_t lane_words = dim * bits / 32;
  return {tile * dim * bits + (4 * g + c) * lane_words + pair / per_half,
          static_cast<int>(16 * odd + (pair % per_half) * bits)};
}

// Value code of channel d of a token.
inline CodeSlot value_code_slot(int64_t d, int64_t dim, int64_t bits) {
  const int64_t j = (d % 8) * (dim / 8) + d / 8, per_word = 32 / bits;
  return {j / per_word, static_cast<int>((j % per_word) * bits)};
}

// Conversions between the research packing and the tile order, for whole blocks:
//   keys:   words [..., groups, D, G * bits / 32] (one block per group, either order);
//   values: words [..., T, D * bits / 32] (one block per token).
at::Tensor keys_to_tile_order(const at::Tensor& research_words, int64_t bits);
at::Tensor keys_from_tile_order(const at::Tensor& tile_words, int64_t bits);
at::Tensor values_to_tile_order(const at::Tensor& research_words, int64_t bits);
at::Tensor values_from_tile_order(const at::Tensor& tile_words, int64_t bits);
// Unpacked codes in the research order straight from tile-order words, for dequantizing without
// packing again: keys [..., groups, D, G], values [..., T, D] (int32).
at::Tensor unpack_keys_from_tile_order(const at::Tensor& tile_words, int64_t bits);
at::Tensor unpack_values_from_tile_order(const at::Tensor& tile_words, int64_t bits);

}  // namespace kivi::kivi_cache
