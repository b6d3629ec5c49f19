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

// ---- Fused decode attention -----------------------------------------------------------------

// Rows of one launch; a larger batch is launched in slices of this many rows.
inline constexpr int kMaxDecodeRows = 64;
// Splits per (row, kv head), tail blocks included: the tensor-core kernel's last block keeps
// their weights in its shared memory.
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

  const int32_t* key_codes = nullptr;  // [B, H, groups, D, Wk]
  const void* key_scale = nullptr;     // [B, H, groups, D]
  const void* key_min = nullptr;
  const void* key_residual = nullptr;    // [B, H, key_slots, D]
  const int32_t* value_codes = nullptr;  // [B, H, tokens, Wv]
  const void* value_scale = nullptr;     // [B, H, tokens, D / G]
  const void* value_min = nullptr;
  const void* value_residual = nullptr;     // [B, H, value_slots, D]
  int64_t key_codes_stride[2] = {0, 0};     // [B, H]; within a head [groups, D, Wk] contiguous
  int64_t key_scale_stride[2] = {0, 0};     // [B, H]; within a head [groups, D] (scale and min)
  int64_t key_residual_stride[2] = {0, 0};  // [B, H]; within a head [slots, D]
  int64_t value_codes_stride[2] = {0, 0};   // [B, H]; within a head [tokens, Wv]
  int64_t value_scale_stride[2] = {0, 0};   // [B, H]; within a head [tokens, D / G]
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
  int splits = 1;       // partial results per (row, query head), tail blocks included
  int tail_splits = 0;  // tensor-core kernel: the last tail_splits blocks of each (row, kv head)
                        // attend its tail, 32 positions per warp (decode_tail_splits)
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
// Blocks of 4 x 32 tail positions the tensor-core kernel needs for the longest tail of a launch:
// a row's tail is what follows its last tile packed on both sides (kTile = 32).
int decode_tail_splits(const DecodeAttention& a);
// Resident blocks per multiprocessor of the kernel that serves these settings.
int decode_blocks_per_sm(DType dtype, int dim, int k_bits, int v_bits, bool cuda_cores_only);
int64_t decode_workspace_floats(int rows, int q_heads, int dim, int splits);
// The dispatch site: runtime sizes -> template constants. Empty string or the error.
std::string launch_decode_attention(const DecodeAttention& args, cudaStream_t stream);

}  // namespace kivi::kivi_cache::cuda
