// The shared building blocks of Llama-like decoders, as free functions over tensors. Each
// mirrors one module of transformers' modeling_llama.py (named in its comment).
#pragma once

#include <utility>

#include <ATen/Tensor.h>

namespace kivi {

// LlamaRMSNorm: normalise in float32, cast back to x's dtype, then scale by the weight.
// On CUDA one fused kernel with the same roundings (model/fused_ops.h).
//   x: [..., hidden]; weight: [hidden]
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// The residual add and the norm after it: {x + delta, rms_norm(x + delta)}, the sum rounded to
// x's dtype as ATen's add rounds it. On CUDA one fused kernel (two ATen ops and a norm kernel
// otherwise).  x, delta: [..., hidden] of one dtype; weight: [hidden]
std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& delta,
                                               const at::Tensor& weight, double eps);

// nn.Linear: x @ weight^T + bias (bias may be undefined). On CUDA, for half/bf16 at batch 1-4
// (a decode step), a fused GEMV that streams the weights once (model/fused_ops.h); its float
// sum runs in another order than cuBLAS's, so results may differ by rounding.
//   x: [..., in]; weight: [out, in]; bias: [out]
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

// LlamaMLP with the gate and up projections fused at load time:
//   down(silu(gate(x)) * up(x)); gate_up: [2 * intermediate, hidden] (gate rows first).
// On CUDA silu(gate) * up is one fused kernel (model/fused_ops.h).
at::Tensor gated_silu_mlp(const at::Tensor& x, const at::Tensor& gate_up,
                          const at::Tensor& gate_up_bias, const at::Tensor& down,
                          const at::Tensor& down_bias);

}  // namespace kivi
