// The shared building blocks of Llama-like decoders, as free functions over tensors. Each
// mirrors one module of transformers' modeling_llama.py (named in its comment).
#pragma once

#include <ATen/Tensor.h>

namespace kivi {

// LlamaRMSNorm: normalise in float32, cast back to x's dtype, then scale by the weight.
// On CUDA one fused kernel with the same roundings (model/fused_ops.h).
//   x: [..., hidden]; weight: [hidden]
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// LlamaMLP with the gate and up projections fused at load time:
//   down(silu(gate(x)) * up(x)); gate_up: [2 * intermediate, hidden] (gate rows first).
// On CUDA silu(gate) * up is one fused kernel (model/fused_ops.h).
at::Tensor gated_silu_mlp(const at::Tensor& x, const at::Tensor& gate_up,
                          const at::Tensor& gate_up_bias, const at::Tensor& down,
                          const at::Tensor& down_bias);

}  // namespace kivi
