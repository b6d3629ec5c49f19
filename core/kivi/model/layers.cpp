#include "kivi/model/layers.h"

#include <optional>

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

std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& delta,
                                               const at::Tensor& weight, double eps) {
  if (fused::fused_ops_apply(x) && fused::fused_ops_apply(delta) &&
      delta.scalar_type() == x.scalar_type() && delta.sizes() == x.sizes() &&
      weight.scalar_type() == x.scalar_type() && weight.dim() == 1 &&
      weight.size(0) == x.size(-1) && weight.device() == x.device() && delta.device() == x.device())
    return fused::add_rms_norm(x, delta, weight, eps);
  at::Tensor sum = x + delta;
  at::Tensor normed = rms_norm(sum, weight, eps);
  return {std::move(sum), std::move(normed)};
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (fused::fused_ops_apply(x))
    if (std::optional<at::Tensor> y = fused::small_linear(x, weight, bias)) return *y;
  return at::linear(x, weight, bias);
}

at::Tensor gated_silu_mlp(const at::Tensor& x, const at::Tensor& gate_up,
                          const at::Tensor& gate_up_bias, const at::Tensor& down,
                          const at::Tensor& down_bias) {
  const at::Tensor both = kivi::linear(x, gate_up, gate_up_bias);  // [..., 2 * intermediate]
  const int64_t inter = both.size(-1) / 2;
  const at::Tensor hidden =
      fused::fused_ops_apply(both) && both.size(-1) % 2 == 0
          ? fused::silu_mul(both)
          : at::silu(both.narrow(-1, 0, inter)) * both.narrow(-1, inter, inter);
  return kivi::linear(hidden, down, down_bias);
}

}  // namespace kivi
