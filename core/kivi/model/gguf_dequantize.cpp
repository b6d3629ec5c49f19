#include "kivi/model/gguf_dequantize.h"

#include <cstring>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "kivi/util/error.h"

namespace kivi {
namespace {

// Little-endian loads from possibly unaligned bytes (blocks are 18 or 20 bytes long).
float load_f16(const uint8_t* p) {
  uint16_t bits = 0;
  std::memcpy(&bits, p, 2);
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}
float load_f32(const uint8_t* p) {
  float v = 0;
  std::memcpy(&v, p, 4);
  return v;
}
float load_bf16(const uint8_t* p) {
  uint16_t bits = 0;
  std::memcpy(&bits, p, 2);
  return static_cast<float>(c10::BFloat16(bits, c10::BFloat16::from_bits()));
}

// Q4_0 block (18 bytes): f16 scale d, then 16 bytes of 4-bit codes; element j < 16 is the low
// nibble of byte j, element j + 16 its high nibble. x = (q - 8) * d.
void q4_0(const uint8_t* b, float* out) {
  const float d = load_f16(b);
  for (int j = 0; j < 16; ++j) {
    out[j] = d * static_cast<float>(static_cast<int>(b[2 + j] & 0x0F) - 8);
    out[j + 16] = d * static_cast<float>(static_cast<int>(b[2 + j] >> 4) - 8);
  }
}

// Q4_1 block (20 bytes): f16 scale d, f16 minimum m, 16 bytes of codes as in Q4_0.
// x = q * d + m, rounded after the product and after the sum as numpy does: the reference
// computes (d * qs) + m in two float32 steps, and the volatile product keeps the compiler from
// contracting them into one fused multiply-add (which rounds once, on targets that have it).
void q4_1(const uint8_t* b, float* out) {
  const float d = load_f16(b);
  const float m = load_f16(b + 2);
  for (int j = 0; j < 16; ++j) {
    volatile float lo = d * static_cast<float>(b[4 + j] & 0x0F);
    volatile float hi = d * static_cast<float>(b[4 + j] >> 4);
    out[j] = lo + m;
    out[j + 16] = hi + m;
  }
}

// Q8_0 block (34 bytes): f16 scale d, 32 int8 codes. x = q * d.
void q8_0(const uint8_t* b, float* out) {
  const float d = load_f16(b);
  for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
}

}  // namespace

std::optional<GgmlBlock> ggml_block(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::F32:
      return GgmlBlock{1, 4};
    case GgmlType::F16:
      return GgmlBlock{1, 2};
    case GgmlType::BF16:
      return GgmlBlock{1, 2};
    case GgmlType::F64:
      return GgmlBlock{1, 8};
    case GgmlType::I8:
      return GgmlBlock{1, 1};
    case GgmlType::I16:
      return GgmlBlock{1, 2};
    case GgmlType::I32:
      return GgmlBlock{1, 4};
    case GgmlType::I64:
      return GgmlBlock{1, 8};
    case GgmlType::Q4_0:
      return GgmlBlock{32, 18};
    case GgmlType::Q4_1:
      return GgmlBlock{32, 20};
    case GgmlType::Q5_0:
      return GgmlBlock{32, 22};
    case GgmlType::Q5_1:
      return GgmlBlock{32, 24};
    case GgmlType::Q8_0:
      return GgmlBlock{32, 34};
    case GgmlType::Q8_1:
      return GgmlBlock{32, 36};
    case GgmlType::IQ4_NL:
      return GgmlBlock{32, 18};
    case GgmlType::MXFP4:
      return GgmlBlock{32, 17};
    case GgmlType::Q2_K:
      return GgmlBlock{256, 84};
    case GgmlType::Q3_K:
      return GgmlBlock{256, 110};
    case GgmlType::Q4_K:
      return GgmlBlock{256, 144};
    case GgmlType::Q5_K:
      return GgmlBlock{256, 176};
    case GgmlType::Q6_K:
      return GgmlBlock{256, 210};
    case GgmlType::Q8_K:
      return GgmlBlock{256, 292};
    case GgmlType::IQ2_XXS:
      return GgmlBlock{256, 66};
    case GgmlType::IQ2_XS:
      return GgmlBlock{256, 74};
    case GgmlType::IQ3_XXS:
      return GgmlBlock{256, 98};
    case GgmlType::IQ1_S:
      return GgmlBlock{256, 50};
    case GgmlType::IQ3_S:
      return GgmlBlock{256, 110};
    case GgmlType::IQ2_S:
      return GgmlBlock{256, 82};
    case GgmlType::IQ4_XS:
      return GgmlBlock{256, 136};
    case GgmlType::IQ1_M:
      return GgmlBlock{256, 56};
    case GgmlType::TQ1_0:
      return GgmlBlock{256, 54};
    case GgmlType::TQ2_0:
      return GgmlBlock{256, 66};
  }
  return std::nullopt;
}

bool ggml_can_dequantize(GgmlType type) {
  switch (type) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
      return true;
    default:
      return false;
  }
}

void dequantize_blocks(GgmlType type, const uint8_t* src, int64_t blocks, float* dst) {
  const GgmlBlock block = *ggml_block(static_cast<uint32_t>(type));
  for (int64_t i = 0; i < blocks; ++i) {
    const uint8_t* b = src + i * block.bytes;
    float* out = dst + i * block.elements;
    switch (type) {
      case GgmlType::F32:
        *out = load_f32(b);
        break;
      case GgmlType::F16:
        *out = load_f16(b);
        break;
      case GgmlType::BF16:
        *out = load_bf16(b);
        break;
      case GgmlType::Q4_0:
        q4_0(b, out);
        break;
      case GgmlType::Q4_1:
        q4_1(b, out);
        break;
      case GgmlType::Q8_0:
        q8_0(b, out);
        break;
      default:
        throw Error("dequantize_blocks: type " + ggml_type_name(static_cast<uint32_t>(type)) +
                    " is not readable");
    }
  }
}

}  // namespace kivi
