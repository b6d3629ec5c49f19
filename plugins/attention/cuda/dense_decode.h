// Decode attention over a dense (full-precision) cache, one new query token per row: a
// split-K kernel that reads each row's keys and values once for all the query heads of a kv
// head (GQA), then a combine over the splits. It serves what SDPA serves worse at decode:
// rows of different lengths (SDPA needs a mask and a slower kernel for them) and short
// launches (cuDNN's SDPA is two kernels with a host-side plan per call). Plain CUDA, no
// libtorch.
#pragma once

#include <cstdint>
#include <string>

#include <cuda_runtime_api.h>

namespace kivi::attention::cuda {

inline constexpr int kDecodeMaxRows = 256;     // rows passed by value in the launch
inline constexpr int kDecodeMaxGroup = 8;      // query heads per kv head
inline constexpr int kDecodeMaxChunk = 256;    // keys per split
inline constexpr int kDecodeMaxSplits = 1024;  // splits the combine weighs (in shared memory)
inline constexpr int64_t kDecodeMaxKeys = int64_t{kDecodeMaxChunk} * kDecodeMaxSplits;

enum class Elem { kHalf, kBFloat16 };

struct DenseDecode {
  Elem type = Elem::kHalf;
  const void* q = nullptr;  // [B, Hq, D]: element strides for B and Hq (D contiguous)
  int64_t q_stride[2] = {0, 0};
  const void* k = nullptr;  // [B, Hkv, capacity, D]: element strides for B, Hkv, token
  const void* v = nullptr;
  int64_t k_stride[3] = {0, 0, 0};
  int64_t v_stride[3] = {0, 0, 0};
  void* out = nullptr;         // [B, Hq, D] contiguous, in the cache's type
  float* workspace = nullptr;  // [B, Hq, splits, D + 2] when splits > 1
  int batch = 0, q_heads = 0, kv_heads = 0, dim = 0;
  float scale = 1;
  int splits = 1, chunk = kDecodeMaxChunk;  // keys per split: a multiple of 32
  // Row b attends to keys [first[b], end[b]); end[b] == first[b]: an idle row (zeros out).
  int first[kDecodeMaxRows] = {};
  int end[kDecodeMaxRows] = {};
};

// Whether the kernel serves these sizes (why not, else empty).
std::string dense_decode_refusal(int batch, int q_heads, int kv_heads, int dim);
// Chooses splits and chunk for `a` (rows, heads and ranges set); returns the workspace floats
// it needs (0 for one split).
int64_t plan_dense_decode(DenseDecode& a);
// Empty on success, else the launch error.
std::string dense_decode(const DenseDecode& a, cudaStream_t stream);

}  // namespace kivi::attention::cuda
