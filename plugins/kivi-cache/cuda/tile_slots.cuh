// Device versions of tile_order.h's slots: where the CUDA kernels find (or put) one code of the
// cache's packed storage in tile order. Same arithmetic as key_code_slot / value_code_slot.
#pragma once

namespace kivi::kivi_cache::cuda {

// Key code of channel d, token t of a group, relative to the group's first word.
__device__ __forceinline__ void key_tile_slot(int d, int t, int dim, int bits, int& word,
                                              int& bit) {
  const int g = t % 8, nt = (t % 32) / 8, kt = d / 16, hi = (d % 16) / 8, c = (d % 8) / 2;
  const int pair = (2 * kt + hi) * 4 + nt, per_half = 16 / bits;
  word = (t / 32) * dim * bits + (4 * g + c) * (dim * bits / 32) + pair / per_half;
  bit = 16 * (d % 2) + (pair % per_half) * bits;
}

// Value code of channel d, relative to the token's first word.
__device__ __forceinline__ void value_tile_slot(int d, int dim, int bits, int& word, int& bit) {
  const int j = (d % 8) * (dim / 8) + d / 8, per_word = 32 / bits;
  word = j / per_word;
  bit = (j % per_word) * bits;
}

// The channel whose code is code j of a value row in tile order.
__device__ __forceinline__ int value_tile_channel(int j, int dim) {
  return 8 * (j % (dim / 8)) + j / (dim / 8);
}

}  // namespace kivi::kivi_cache::cuda
