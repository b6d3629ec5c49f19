// The decoder's small ops as single fused CUDA kernels (model/cuda/fused_kernels.h) for tensors
// on a GPU; layers.cpp and rotary.cpp call these when fused_ops_apply() says so, and the plain
// ATen chains otherwise (the CPU, a build without CUDA, other dtypes).
#pragma once

#include <ATen/Tensor.h>

namespace kivi::fused {

// Whether x (and the tensors it goes with) can take the fused kernels: a CUDA build, x on a
// CUDA device, float32/float16/bfloat16, a last dimension of stride 1.
bool fused_ops_apply(const at::Tensor& x);

// layers.h's rms_norm: x [..., hidden], weight [hidden] of x's dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
// rotary.h's apply_rotary: x [B, H, T, D]; cos, sin [B, T, D] of x's dtype.
at::Tensor rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
// silu(gate_up[..., :I]) * gate_up[..., I:] -> [..., I]
at::Tensor silu_mul(const at::Tensor& gate_up);

}  // namespace kivi::fused
