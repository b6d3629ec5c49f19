// One kernel for an append to the full-precision cache: every row's new keys and values (both
// sides, all heads) copied to that row's next positions. ATen needed two copies per append
// (keys, values), and one pair per row when the rows' lengths differ (a batch of prompts, a
// server's decode step with rows at different positions). Plain CUDA, no libtorch.
#pragma once

#include <cstdint>
#include <string>

#include <cuda_runtime_api.h>

namespace kivi::fp_cache::cuda {

inline constexpr int kAppendMaxRows = 64;  // rows passed by value in the launch

struct AppendRows {
  // Sources: [B, H, T, D] with element strides for B, H, T (D contiguous).
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t k_stride[3] = {0, 0, 0};
  int64_t v_stride[3] = {0, 0, 0};
  // Destinations: [B, H, capacity, D] with element strides for B, H, capacity (D contiguous).
  void* keys = nullptr;
  void* values = nullptr;
  int64_t keys_stride[3] = {0, 0, 0};
  int64_t values_stride[3] = {0, 0, 0};
  int batch = 0, heads = 0, tokens = 0, dim = 0;
  int element_bytes = 2;  // 2 (fp16, bf16) or 4 (fp32)
  // Row b's tokens [0, count[b]) go to positions [position[b], position[b] + count[b]).
  int64_t position[kAppendMaxRows] = {};
  int count[kAppendMaxRows] = {};
};

// Empty on success, else why it failed (a launch error).
std::string append_rows(const AppendRows& rows, cudaStream_t stream);

}  // namespace kivi::fp_cache::cuda
