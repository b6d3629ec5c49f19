#include <algorithm>

#include <ATen/ATen.h>

#include "fp8_cache.h"
#include "kivi/attention/dense_masks.h"

namespace fp8_cache {

std::pair<at::Tensor, at::Tensor> dequantize(const Fp8Parts& p, int64_t keys,
                                             at::ScalarType dtype) {
  auto side = [&](const at::Tensor& codes, const at::Tensor& scale) {
    return (codes.narrow(2, 0, keys).to(at::kFloat) * scale.narrow(2, 0, keys).unsqueeze(-1))
        .to(dtype);
  };
  return {side(p.k, p.k_scale), side(p.v, p.v_scale)};
}

at::Tensor Fp8Attention::prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 std::span<const int64_t> counts,
                                 const kivi::AttentionParams& params) const {
  kivi::attention::check_prefill_inputs("fp8", q, k, v, counts);
  return kivi::attention::sdpa_prefill(q, k, v, counts, params);
}

at::Tensor Fp8Attention::decode(const at::Tensor& q, const kivi::CacheView& view,
                                std::span<const int64_t> counts,
                                const kivi::AttentionParams& params) const {
  const Fp8Parts& parts = view.payload_as<Fp8Parts>(kFormat);
  const int64_t keys = *std::max_element(view.lengths.begin(), view.lengths.end());
  const auto [k, v] = dequantize(parts, keys, q.scalar_type());
  const at::Tensor mask = kivi::attention::decode_mask(view.lengths, counts, q.size(2), keys,
                                                       params.sliding_window, q.device());
  return kivi::attention::zero_padding(kivi::attention::masked_sdpa(q, k, v, mask, params.scale),
                                       counts);
}

}  // namespace fp8_cache
