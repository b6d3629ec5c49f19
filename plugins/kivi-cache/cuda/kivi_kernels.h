// The KIVI cache's CUDA kernels, as plain C++: structs of pointers and strides (in elements),
// no libtorch, so the .cu files compile quickly and any caller can drive them. cuda_ops.cpp
// turns ATen tensors into these structs.
//
// Layout of the packed cache: plugins/kivi-cache/include/kivi/kivi_cache/kivi_parts.h. Storage
// dtypes: fp16, bf16, fp32.
#pragma once

#include <cstdint>
#include <string>

#include <cuda_runtime_api.h>

namespace kivi::kivi_cache::cuda {

enum class DType { kHalf, kBFloat16, kFloat };

// ---- Quantize and pack on append ------------------------------------------------------------

// A 4-d strided tensor [n, H, T, D] (elements of `dtype`) that the flush reads.
struct Strided4 {
  const void* data = nullptr;
  int64_t stride[4] = {0, 0, 0, 0};
};

// Keys: x [n, H, groups * G, D] -> per channel d and token group g, the group's D x G codes
// into the block codes[i, h, g, 0 .. D * G * bits / 32) and scale/min[i, h, g, d].
struct KeyFlush {
  DType dtype = DType::kHalf;
  int n = 0, heads = 0, groups = 0, dim = 0, group_size = 32, bits = 2;
  Strided4 x;
  int32_t* codes = nullptr;  // at group 0 of the destination
  int64_t codes_stride[3];   // [n, H, groups] strides; a group's D * Wk words are contiguous
  void* scale = nullptr;
  void* min = nullptr;
  int64_t scale_stride[4];  // shared by scale and min: [n, H, groups, D]
  bool tile_order = true;   // codes in tile order (tile_order.h), else the research packing
};
// Values: x [n, H, T, D] -> per token, D / G groups of G channels: codes[i, h, t, 0 .. D*bits/32)
// and scale/min[i, h, t, 0 .. D / G). Both write the codes in tile order (tile_order.h) unless
// tile_order is false. They return an empty string or the error.
struct ValueFlush {
  DType dtype = DType::kHalf;
  int n = 0, heads = 0, tokens = 0, dim = 0, group_size = 32, bits = 2;
  Strided4 x;
  int32_t* codes = nullptr;  // at token 0 of the destination
  int64_t codes_stride[3];   // [n, H, T]; words of a token contiguous
  void* scale = nullptr;
  void* min = nullptr;
  int64_t scale_stride[3];  // [n, H, T]; groups of a token contiguous
  bool tile_order = true;
};
// Both compute exactly the quantizer of quantize.h (same per-op rounding in the storage dtype).
// A key group block must fit in 48 KB of shared memory (key_flush_supported).
bool key_flush_supported(int dim, int group_size, int bits);
std::string launch_key_flush(const KeyFlush& args, cudaStream_t stream);
std::string launch_value_flush(const ValueFlush& args, cudaStream_t stream);

// ---- A decode step's append, in one launch -------------------------------------------------

// Rows of one append launch; a larger batch is launched in slices of this many rows.
inline constexpr int kMaxAppendRows = 128;

// One new token per row (k, v [rows, H, 1, D]) into the windows, and the value flush the last
// step deferred (KiviCache's deferred flush: position flush_position[r] leaves the value ring
// for the packed values), for every row of a layer at once. What the separate flush kernel and
// two copies did, per row state, in one kernel: the flush reads its ring slot before the new
// value is written, since with a ring of R + 1 slots the two are the same slot. Key flushes (F
// tokens at once, every F steps) stay with launch_key_flush.
struct DecodeAppend {
  DType dtype = DType::kHalf;
  int rows = 0, heads = 0, dim = 0;
  int group_size = 32, bits = 2;  // of the values; bits 16: values are not quantized
  bool tile_order = true;
  Strided4 k, v;                 // at row 0 of the launch
  void* key_residual = nullptr;  // [rows, H, slots, D] at row 0
  int64_t key_residual_stride[4] = {0, 0, 0, 0};
  void* value_residual = nullptr;  // [rows, H, value_slots, D] at row 0
  int64_t value_residual_stride[4] = {0, 0, 0, 0};
  int value_slots = 1;
  int32_t* value_codes = nullptr;  // [N, H, T, D * bits / 32] at flush_index 0
  int64_t value_codes_stride[3] = {0, 0, 0};
  void* value_scale = nullptr;  // [N, H, T, D / G] at flush_index 0
  void* value_min = nullptr;
  int64_t value_scale_stride[3] = {0, 0, 0};  // shared by scale and min
  int key_slot[kMaxAppendRows];               // key residual slot of the new key; -1: no new token
  int value_slot[kMaxAppendRows];             // value residual slot of the new value
  int flush_position[kMaxAppendRows];         // value position to quantize first; -1: none
  // Where that position's codes, scales and minima go: first and third index of the packed value
  // tensors (the launch's row and the position when contiguous, a page and the position within
  // it when paged).
  int flush_index[kMaxAppendRows];
  int flush_slot[kMaxAppendRows];
};
// Whether launch_decode_append serves these sizes (else the caller takes the separate ops).
bool decode_append_supported(int dim, int group_size, int bits);
std::string launch_decode_append(const DecodeAppend& args, cudaStream_t stream);

// ---- Where a row's packed tokens live ---------------------------------------------------------

// Tokens per page of the identity table: a whole row.
inline constexpr int kWholeRowPage = 1 << 30;

// The per-sequence block table every attention kernel addresses the packed parts through (the
// residual windows stay per row): position p of row b is token p % page_tokens of page
// pages[b * stride + p / page_tokens], and the page is the first index of every packed storage
// tensor (key codes, scales, minima; value codes, scales, minima). A page holds whole key groups:
// page_tokens is a power of two and a multiple of group_size. The contiguous cache passes the
// identity table, one page per row (page b) and page_tokens = kWholeRowPage, as pages = nullptr
// (so its kernels load no page ids); a paged cache passes its own.
struct BlockTable {
  const int32_t* pages = nullptr;  // [rows, stride] int32 page ids, on the GPU; null: identity
  int64_t stride = 1;
  int page_tokens = kWholeRowPage;
};

// ---- Fused decode attention -----------------------------------------------------------------

// Rows of one launch; a larger batch is launched in slices of this many rows.
inline constexpr int kMaxDecodeRows = 64;
// Up to this many splits form a thread-block cluster (DecodeAttention::cluster_splits). Two:
// clusters of four left slots that no cluster fit (batch 8 x 8K: 62.0 against 38.9 us).
inline constexpr int kClusterSplits = 2;
// Splits per (row, kv head): the tensor-core kernel's last block keeps their weights in its
// shared memory.
inline constexpr int kMostDecodeSplits = 512;

// One new query token per row attending over everything the row holds: positions [0, kq) from
// the packed keys, [kq, L) from the key residual (slot p - kq); positions [0, vq) from the
// packed values, [vq, L) from the value ring (slot p % value_slots). A row with L = 0 writes 0.
struct DecodeAttention {
  DType dtype = DType::kHalf;
  int rows = 0, q_heads = 0, kv_heads = 0, dim = 0;
  int group_size = 32, k_bits = 2, v_bits = 2;  // 16 bits: that side is all residual
  float scale = 1.0f;                           // softmax scale

  const void* q = nullptr;  // [rows, q_heads, 1, D]
  int64_t q_stride[3];      // [rows, q_heads, (token)]: element strides; D contiguous
  void* out = nullptr;      // [rows, q_heads, D] contiguous, storage dtype

  // Packed parts, by page (`table`): P pages of page_tokens tokens (the contiguous cache: P = B).
  const int32_t* key_codes = nullptr;  // [P, H, groups, D, Wk]
  const void* key_scale = nullptr;     // [P, H, groups, D]
  const void* key_min = nullptr;
  const int32_t* value_codes = nullptr;  // [P, H, tokens, Wv]
  const void* value_scale = nullptr;     // [P, H, tokens, D / G]
  const void* value_min = nullptr;
  int64_t key_codes_stride[2] = {0, 0};    // [P, H]; within a head [groups, D, Wk] contiguous
  int64_t key_scale_stride[2] = {0, 0};    // [P, H]; within a head [groups, D] (scale and min)
  int64_t value_codes_stride[2] = {0, 0};  // [P, H]; within a head [tokens, Wv]
  int64_t value_scale_stride[2] = {0, 0};  // [P, H]; within a head [tokens, D / G]
  BlockTable table;                        // rows [0, rows) of the launch
  // Residual windows, by row of the launch.
  const void* key_residual = nullptr;       // [rows, H, key_slots, D]
  const void* value_residual = nullptr;     // [rows, H, value_slots, D]
  int64_t key_residual_stride[2] = {0, 0};  // [rows, H]; within a head [slots, D]
  int64_t value_residual_stride[2] = {0, 0};
  int value_slots = 1;

  int length[kMaxDecodeRows];         // L per row (0: idle row)
  int key_quantized[kMaxDecodeRows];  // kq per row, a multiple of 32
  int value_quantized[kMaxDecodeRows];

  // Float workspace for the split-sequence partial results: see decode_workspace_floats().
  float* workspace = nullptr;
  // Tensor-core kernel with splits > 1: [rows * kv_heads] ints, zero before the launch and left
  // zero after it (the last split of each (row, kv head) to finish combines them and resets).
  int* counters = nullptr;
  // Profiling knob (tensor-core kernel): [rows, kv_heads, splits, 8] global-timer stamps per
  // block phase (decode_merge.cuh, DecodeStamp); null: none.
  unsigned long long* timing = nullptr;
  int splits = 1;  // partial results per (row, query head)
  // Tensor-core kernel, 2 .. kClusterSplits splits on sm_90: the splits of each (row, kv head)
  // run as one thread-block cluster and combine through distributed shared memory (no
  // workspace, no counters).
  bool cluster_splits = false;
  // fp16/bf16 run on tensor cores (decode_attention_mma.cuh); this forces the CUDA-core kernel
  // (decode_attention.cuh, which also serves fp32), for tests and benchmarks.
  bool cuda_cores_only = false;
};

// Whether the fused kernel serves these settings; otherwise `why` names the valid combinations.
bool decode_supported(DType dtype, int dim, int q_heads, int kv_heads, int group_size, int k_bits,
                      int v_bits, std::string* why);
// Splits of the sequence per (row, kv head) for the longest row, so that the grid fills
// `sm_count` multiprocessors holding `blocks_per_sm` blocks each in as few, as full, waves as
// it can; and the workspace they need.
int decode_splits(int rows, int kv_heads, int max_length, int sm_count, int blocks_per_sm,
                  int most_splits = kMostDecodeSplits);
// Resident blocks per multiprocessor of the kernel that serves these settings.
int decode_blocks_per_sm(DType dtype, int dim, int k_bits, int v_bits, bool cuda_cores_only);
int64_t decode_workspace_floats(int rows, int q_heads, int dim, int splits);
// The dispatch site: runtime sizes -> template constants. Empty string or the error.
std::string launch_decode_attention(const DecodeAttention& args, cudaStream_t stream);

// ---- Fused chunk attention ------------------------------------------------------------------

// Rows of one launch (a larger batch is launched in slices), and query rows per block: a chunk's
// query rows of one (row, kv head) are R = token * rep + head in the GQA group.
inline constexpr int kMaxChunkRows = 64;
inline constexpr int kChunkQueryRows = 64;

// A chunk of new tokens per row attending over the cache as stored (KiviAttention::chunk): query
// token i of row b sits at position first[b] + i and sees positions [0, first[b]) as stored (the
// packed parts below key_quantized / value_quantized through `table`, the residual windows above
// them as in DecodeAttention) and the chunk's own k/v at positions first[b] .. first[b] + i.
// Query tokens i >= count[b] (padding) output zeros.
struct ChunkAttention {
  DType dtype = DType::kHalf;  // fp16 or bf16 (fp32 takes the blocked ATen path)
  int rows = 0, q_heads = 0, kv_heads = 0, dim = 0;
  int tokens = 0;                               // T: the chunk dimension of q, k, v and out
  int group_size = 32, k_bits = 2, v_bits = 2;  // 16 bits: that side is all residual
  float scale = 1.0f;                           // softmax scale

  const void* q = nullptr;  // [rows, q_heads, T, D]
  const void* k = nullptr;  // [rows, kv_heads, T, D]: the chunk's own keys and values
  const void* v = nullptr;
  int64_t q_stride[3] = {0, 0, 0};  // [rows, heads, T] element strides; D contiguous, rows of
  int64_t k_stride[3] = {0, 0, 0};  // 16-byte aligned
  int64_t v_stride[3] = {0, 0, 0};
  void* out = nullptr;  // [rows, q_heads, T, D] contiguous, storage dtype

  // The packed parts (kivi_parts.h), first index = page of `table`, strides [page, H]; within a
  // head contiguous as in DecodeAttention.
  const int32_t* key_codes = nullptr;  // [pages, H, groups, D, Wk]
  const void* key_scale = nullptr;     // [pages, H, groups, D]
  const void* key_min = nullptr;
  const int32_t* value_codes = nullptr;  // [pages, H, tokens, Wv]
  const void* value_scale = nullptr;     // [pages, H, tokens, D / G]
  const void* value_min = nullptr;
  int64_t key_codes_stride[2] = {0, 0};
  int64_t key_scale_stride[2] = {0, 0};  // scale and min
  int64_t value_codes_stride[2] = {0, 0};
  int64_t value_scale_stride[2] = {0, 0};
  BlockTable table;  // at this launch's row 0
  // Residual windows, per row: [rows, H, slots, D] element strides; D contiguous.
  const void* key_residual = nullptr;
  const void* value_residual = nullptr;
  int64_t key_residual_stride[3] = {0, 0, 0};
  int64_t value_residual_stride[3] = {0, 0, 0};
  int value_slots = 1;

  int first[kMaxChunkRows];          // tokens stored = the chunk's first position
  int count[kMaxChunkRows];          // the chunk's tokens (0: idle row, output zeros)
  int key_quantized[kMaxChunkRows];  // a multiple of 32
  int value_quantized[kMaxChunkRows];

  // Splits of each block's positions (tiles of 32): with more than one, float partials go to
  // `workspace` (chunk_workspace_floats) and a second kernel merges them.
  int splits = 1, tiles_per_split = 1;
  float* workspace = nullptr;
};

// Query-row tiles of a launch's grid.
inline int chunk_query_tiles(const ChunkAttention& a) {
  const int rep = a.kv_heads > 0 ? a.q_heads / a.kv_heads : 1;
  return (a.tokens * rep + kChunkQueryRows - 1) / kChunkQueryRows;
}
// Whether the fused kernel serves these settings; otherwise `why` names the valid combinations.
bool chunk_supported(DType dtype, int dim, int q_heads, int kv_heads, int group_size, int k_bits,
                     int v_bits, std::string* why);
// Resident blocks per multiprocessor of the kernel that serves these settings.
int chunk_blocks_per_sm(DType dtype, int dim, int k_bits, int v_bits);
// Sets a.splits and a.tiles_per_split so that the grid fills `sm_count` multiprocessors holding
// `blocks_per_sm` blocks each; then the workspace they need (0 for one split).
void choose_chunk_splits(ChunkAttention& a, int sm_count, int blocks_per_sm);
int64_t chunk_workspace_floats(const ChunkAttention& a);
// The dispatch site: runtime sizes -> template constants. Empty string or the error.
std::string launch_chunk_attention(const ChunkAttention& args, cudaStream_t stream);

}  // namespace kivi::kivi_cache::cuda
