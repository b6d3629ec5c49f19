#include "quantize.h"

#include <ATen/ATen.h>

namespace kivi::kivi_cache {
namespace {

// Dequantization arithmetic: float32 for fp16 (exact products, one final rounding); float64
// for bf16 and fp32, whose ranges can overflow float32 in code * scale.
at::ScalarType compute_dtype(at::ScalarType stored) {
  return stored == at::kHalf ? at::kFloat : at::kDouble;
}

}  // namespace

at::Tensor pack_codes(const at::Tensor& codes, int64_t bits) {
  const int64_t per_word = codes_per_word(bits);
  std::vector<int64_t> shape(codes.sizes().begin(), codes.sizes().end());
  shape.back() /= per_word;
  shape.push_back(per_word);
  const at::Tensor split = codes.reshape(shape);  // [..., words, per_word]
  at::Tensor words = split.select(-1, 0).clone();
  // Shifts and ORs over whole tensors; the top code may set the sign bit (wraps, as in int32).
  for (int64_t j = 1; j < per_word; ++j)
    words.bitwise_or_(split.select(-1, j).bitwise_left_shift(j * bits));
  return words;
}

at::Tensor unpack_codes(const at::Tensor& words, int64_t bits) {
  const int64_t per_word = codes_per_word(bits);
  const at::Tensor shifts =
      at::arange(per_word, words.options().dtype(at::kInt)).mul_(static_cast<int32_t>(bits));
  // Arithmetic right shift sign-extends the top code; the mask drops those bits.
  at::Tensor codes = words.unsqueeze(-1).bitwise_right_shift(shifts).bitwise_and_((1 << bits) - 1);
  return codes.flatten(-2);  // [..., W * per_word]
}

QuantizedGroups quantize_groups(const at::Tensor& x, int64_t bits) {
  const double max_code = static_cast<double>((int64_t{1} << bits) - 1);
  at::Tensor min = x.amin(-1);  // [..., groups]
  at::Tensor max = x.amax(-1);
  at::Tensor scale = (max - min) / max_code;
  // A range beyond the dtype's largest value would make scale inf and codes NaN. Applied
  // unconditionally (on the small scale tensor) so the GPU path needs no host sync.
  const at::Tensor overflow =
      scale.isinf().logical_and_(min.isfinite()).logical_and_(max.isfinite());
  scale = at::where(overflow, max / max_code - min / max_code, scale);
  at::Tensor q = (x - min.unsqueeze(-1)).div_(scale.unsqueeze(-1));
  q.clamp_(0, max_code).round_();
  // Constant group: 0 / 0; code 0 dequantizes to min exactly.
  q.masked_fill_((scale == 0).unsqueeze(-1), 0);
  return {q.to(at::kInt), scale, min};
}

PackedKeys quantize_keys(const at::Tensor& x, int64_t group_size, int64_t bits) {
  const int64_t n = x.size(0), heads = x.size(1), tokens = x.size(2), dim = x.size(3);
  // [n, H, groups, G, D] -> [n, H, groups, D, G]: a channel's group along the last dimension.
  const at::Tensor grouped =
      x.reshape({n, heads, tokens / group_size, group_size, dim}).transpose(-1, -2);
  QuantizedGroups q = quantize_groups(grouped, bits);
  return {pack_codes(q.codes, bits), q.scale, q.min};
}

at::Tensor dequantize_keys(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& min,
                           int64_t group_size, int64_t bits, at::ScalarType dtype) {
  (void)group_size;  // the unpacked codes carry it
  return dequantize_unpacked_keys(unpack_codes(codes, bits), scale, min, dtype);
}

at::Tensor dequantize_unpacked_keys(const at::Tensor& codes, const at::Tensor& scale,
                                    const at::Tensor& min, at::ScalarType dtype) {
  const at::ScalarType compute = compute_dtype(scale.scalar_type());
  const at::Tensor c = codes.to(compute);  // [n, H, groups, D, G]
  const at::Tensor x = c.mul_(scale.to(compute).unsqueeze(-1)).add_(min.to(compute).unsqueeze(-1));
  const int64_t n = codes.size(0), heads = codes.size(1), groups = codes.size(2),
                dim = codes.size(3), group_size = codes.size(4);
  return x.transpose(-1, -2).reshape({n, heads, groups * group_size, dim}).to(dtype);
}

PackedValues quantize_values(const at::Tensor& x, int64_t group_size, int64_t bits) {
  const int64_t n = x.size(0), heads = x.size(1), tokens = x.size(2), dim = x.size(3);
  const at::Tensor grouped = x.reshape({n, heads, tokens, dim / group_size, group_size});
  QuantizedGroups q = quantize_groups(grouped, bits);
  return {pack_codes(q.codes.reshape({n, heads, tokens, dim}), bits), q.scale, q.min};
}

at::Tensor dequantize_values(const at::Tensor& codes, const at::Tensor& scale,
                             const at::Tensor& min, int64_t group_size, int64_t bits,
                             at::ScalarType dtype) {
  return dequantize_unpacked_values(unpack_codes(codes, bits), scale, min, group_size, dtype);
}

at::Tensor dequantize_unpacked_values(const at::Tensor& codes, const at::Tensor& scale,
                                      const at::Tensor& min, int64_t group_size,
                                      at::ScalarType dtype) {
  const int64_t n = codes.size(0), heads = codes.size(1), tokens = codes.size(2);
  const at::ScalarType compute = compute_dtype(scale.scalar_type());
  const at::Tensor c = codes.to(compute);  // [n, H, T, D]
  const int64_t dim = c.size(3);
  const at::Tensor x = c.reshape({n, heads, tokens, dim / group_size, group_size})
                           .mul_(scale.to(compute).unsqueeze(-1))
                           .add_(min.to(compute).unsqueeze(-1));
  return x.reshape({n, heads, tokens, dim}).to(dtype);
}

}  // namespace kivi::kivi_cache
