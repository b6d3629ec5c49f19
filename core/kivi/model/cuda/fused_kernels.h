// Fused CUDA kernels for the decoder's small ops, as plain C++ (no libtorch; fused_ops.cpp
// bridges ATen to them). At decode each of these ops is a handful of tiny ATen kernels (the
// RMSNorm alone is eight); fused, a layer launches about 26 fewer kernels.
//
// Each kernel keeps the reference's roundings: it computes in float and rounds to the storage
// type exactly where the chain of ATen ops on a T tensor would (only the order of the RMSNorm's
// sum differs).
#pragma once

#include <cstdint>
#include <string>

#include <cuda_runtime_api.h>

namespace kivi::fused {

enum class ElemType { kFloat, kHalf, kBFloat16 };

// y[r] = w * T(x[r] * rsqrt(mean(x[r]^2) + eps)), the mean in float. x: rows x cols with row
// stride x_stride (cols contiguous); w: [cols]; y: rows x cols contiguous.
std::string rms_norm(ElemType type, const void* x, int64_t x_stride, const void* w, void* y,
                     int64_t rows, int64_t cols, float eps, cudaStream_t stream);

// The rows of one RMSNorm launch. With a delta (add_rms_norm): sum = T(x + delta), then the norm
// of sum; sum and y rows x cols contiguous, x and delta rows with their own strides.
struct NormRows {
  const void* x = nullptr;
  int64_t x_stride = 0;
  const void* delta = nullptr;
  int64_t delta_stride = 0;
  void* sum = nullptr;
  const void* w = nullptr;
  void* y = nullptr;
  int64_t rows = 0, cols = 0;
  float eps = 0;
};
// The residual add before a norm (h + attention output, then the MLP's norm) in the same kernel:
// sum = T(x + delta) as ATen's add rounds it, y = rms_norm(sum); one launch instead of two.
std::string add_rms_norm(ElemType type, const NormRows& rows, cudaStream_t stream);

// out = x * cos + rotate_half(x) * sin, each product and the sum rounded to T.
//   x: [B, H, T, D] with element strides x_stride (D contiguous); cos, sin: [B, T, D]
//   contiguous; out: [B, H, T, D] contiguous.
struct Rotary {
  ElemType type = ElemType::kFloat;
  const void* x = nullptr;
  int64_t x_stride[3] = {0, 0, 0};  // B, H, T
  const void* cos = nullptr;
  const void* sin = nullptr;
  void* out = nullptr;
  int64_t batch = 0, heads = 0, tokens = 0, dim = 0;
};
std::string rotary(const Rotary& args, cudaStream_t stream);
// Two rotary jobs of one type in one launch (a layer's q and k, same cos and sin).
std::string rotary_pair(const Rotary& a, const Rotary& b, cudaStream_t stream);

// y[m, j] = T(sum_i x[m, i] * w[j, i] + bias[j]) for the few rows of a decode step (at most
// kGemvMaxRows), the sum in float: at::linear for half/bf16 at batch 1-4, without cuBLAS's
// split-K second kernel. x: rows x k with row stride x_stride; w: n x k contiguous; bias: [n]
// or null; y: rows x n contiguous. k and x_stride multiples of 8, every row 16-byte aligned.
inline constexpr int64_t kGemvMaxRows = 4;
struct Gemv {
  const void* x = nullptr;
  int64_t x_stride = 0;
  const void* w = nullptr;
  const void* bias = nullptr;
  void* y = nullptr;
  int64_t rows = 0, n = 0, k = 0;
};
std::string gemv(ElemType type, const Gemv& args, cudaStream_t stream);

// out[r, j] = T(silu(gate)) * up with gate = gate_up[r, j], up = gate_up[r, inter + j].
//   gate_up: rows x (2 inter) with row stride gu_stride; out: rows x inter contiguous.
std::string silu_mul(ElemType type, const void* gate_up, int64_t gu_stride, void* out, int64_t rows,
                     int64_t inter, cudaStream_t stream);

}  // namespace kivi::fused
