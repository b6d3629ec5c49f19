#include "kivi/model/layers.h"

#include <ATen/ATen.h>

#include "kivi/model/fused_ops.h"

namespace kivi {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (fused::fused_ops_apply(x) && weight.scalar_type() == x.scalar_type() && weight.dim() == 1 &&
      weight.size(0) == x.size(-1) && weight.device() == x.device())
    return fused::rms_norm(x, weight, eps);
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  return weight * (x32 * at::rsqrt(variance + eps)).to(x.scalar_type());
}

at::Tensor gated_silu_mlp(const at::Tensor& x, const at::Tensor& gate_up,
                          const at::Tensor& gate_up_bias, const at::Tensor& down,
                          const at::Tensor& down_bias) {
  const at::Tensor both = at::linear(x, gate_up, gate_up_bias);  // [..., 2 * intermediate]
  const int64_t inter = both.size(-1) / 2;
  const at::Tensor hidden =
      fused::fused_ops_apply(both) && both.size(-1) % 2 == 0
          ? fused::silu_mul(both)
          : at::silu(both.narrow(-1, 0, inter)) * both.narrow(-1, inter, inter);
  return at::linear(hidden, down, down_bias);
}

}  // namespace kivi
