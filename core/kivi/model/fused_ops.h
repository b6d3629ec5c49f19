// The decoder's small ops as single fused CUDA kernels (model/cuda/fused_kernels.h) for tensors
// on a GPU; layers.cpp and rotary.cpp call these when fused_ops_apply() says so, and the plain
// ATen chains otherwise (the CPU, a build without CUDA, other dtypes).
#pragma once

#include <optional>
#include <utility>

#include <ATen/Tensor.h>

namespace kivi::fused {

// Whether x (and the tensors it goes with) can take the fused kernels: a CUDA build, x on a
// CUDA device, float32/float16/bfloat16, a last dimension of stride 1.
bool fused_ops_apply(const at::Tensor& x);

// layers.h's rms_norm: x [..., hidden], weight [hidden] of x's dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
// layers.h's add_rms_norm: x, delta [..., hidden] of one dtype -> {x + delta, its norm}.
std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& delta,
                                               const at::Tensor& weight, double eps);
// rotary.h's apply_rotary: x [B, H, T, D]; cos, sin [B, T, D] of x's dtype.
at::Tensor rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
// rotary.h's apply_rotary_pair: a [B, Ha, T, D] and b [B, Hb, T, D] in one launch.
std::pair<at::Tensor, at::Tensor> rotary_pair(const at::Tensor& a, const at::Tensor& b,
                                              const at::Tensor& cos, const at::Tensor& sin);
// layers.h's linear at batch 1-4: x [..., k] half/bf16 with at most 4 rows, weight [n, k]
// contiguous, bias [n] or undefined; nullopt where the fused GEMV does not serve (then
// at::linear does).
std::optional<at::Tensor> small_linear(const at::Tensor& x, const at::Tensor& weight,
                                       const at::Tensor& bias);
// silu(gate_up[..., :I]) * gate_up[..., I:] -> [..., I]
at::Tensor silu_mul(const at::Tensor& gate_up);

}  // namespace kivi::fused
