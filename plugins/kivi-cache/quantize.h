// KIVI's quantizer, as the research code (jy-yuan/KIVI quant/new_pack.py) defines it:
// asymmetric min/max per group, scale = (max - min) / (2^bits - 1),
// code = round(clamp((x - min) / scale, 0, 2^bits - 1)), computed in the input's dtype with the
// same ATen ops (so codes are bit-identical to the reference on the same device), and codes
// packed into int32 words from the low bits up. Two guards the research code lacks:
//   - a constant group (scale 0) gets code 0, so x' = min exactly (no 0/0);
//   - a group whose range overflows the dtype (e.g. max - min > 65504 in fp16) gets
//     scale = max/m - min/m instead of inf; codes saturate instead of turning NaN.
// Dequantization computes code * scale + min in float32 (fp16 models) or float64 (bf16, fp32:
// their ranges can overflow float32) and rounds once to the output dtype. A step below the
// dtype's smallest subnormal rounds to scale 0: such a group decodes to its min.
#pragma once

#include <cstdint>

#include <ATen/Tensor.h>

namespace kivi::kivi_cache {

// Codes per int32 word: 16 at 2 bits, 8 at 4, 4 at 8.
inline int64_t codes_per_word(int64_t bits) {
  return 32 / bits;
}

// codes: [..., N] int32 in [0, 2^bits), N a multiple of codes_per_word(bits).
// Returns [..., N * bits / 32] int32; code j of a word at bits [j * bits, (j + 1) * bits).
at::Tensor pack_codes(const at::Tensor& codes, int64_t bits);
// words: [..., W] int32. Returns [..., W * 32 / bits] int32 codes.
at::Tensor unpack_codes(const at::Tensor& words, int64_t bits);

struct QuantizedGroups {
  at::Tensor codes;  // [..., groups, G] int32, unpacked
  at::Tensor scale;  // [..., groups], x's dtype
  at::Tensor min;    // [..., groups], x's dtype
};
// x: [..., groups, G] (any strides); one group per last-dimension row.
QuantizedGroups quantize_groups(const at::Tensor& x, int64_t bits);

struct PackedKeys {
  at::Tensor codes;  // [n, H, T / G, D, G * bits / 32] int32
  at::Tensor scale;  // [n, H, T / G, D]
  at::Tensor min;    // [n, H, T / G, D]
};
// Keys per channel: x [n, H, T, D] with T a multiple of G; group g of channel d holds tokens
// [g * G, (g + 1) * G).
PackedKeys quantize_keys(const at::Tensor& x, int64_t group_size, int64_t bits);
// Returns [n, H, groups * G, D] in `dtype`.
at::Tensor dequantize_keys(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& min,
                           int64_t group_size, int64_t bits, at::ScalarType dtype);
// The same from codes already unpacked: [n, H, groups, D, G] int32.
at::Tensor dequantize_unpacked_keys(const at::Tensor& codes, const at::Tensor& scale,
                                    const at::Tensor& min, at::ScalarType dtype);

struct PackedValues {
  at::Tensor codes;  // [n, H, T, D * bits / 32] int32
  at::Tensor scale;  // [n, H, T, D / G]
  at::Tensor min;    // [n, H, T, D / G]
};
// Values per token: x [n, H, T, D] with D a multiple of G; group c of a token holds channels
// [c * G, (c + 1) * G).
PackedValues quantize_values(const at::Tensor& x, int64_t group_size, int64_t bits);
// Returns [n, H, T, D] in `dtype`.
at::Tensor dequantize_values(const at::Tensor& codes, const at::Tensor& scale,
                             const at::Tensor& min, int64_t group_size, int64_t bits,
                             at::ScalarType dtype);
// The same from codes already unpacked: [n, H, T, D] int32.
at::Tensor dequantize_unpacked_values(const at::Tensor& codes, const at::Tensor& scale,
                                      const at::Tensor& min, int64_t group_size,
                                      at::ScalarType dtype);

}  // namespace kivi::kivi_cache
