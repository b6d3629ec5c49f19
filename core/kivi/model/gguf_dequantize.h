// ggml's tensor storage formats: the block geometry of every type (so a GGUF tensor table can
// be checked even for types kivi cannot read) and dequantization of those it reads: F32, F16,
// BF16, Q8_0, Q4_0 and Q4_1. Results equal the reference `gguf` Python package's bit for bit
// (the same float32 operations in the same order).
#pragma once

#include <cstdint>
#include <optional>

#include "kivi/model/gguf_file.h"

namespace kivi {

struct GgmlBlock {
  int64_t elements = 1;  // values per block
  int64_t bytes = 4;     // bytes per block
};

// The block geometry of `type`; nullopt for a number ggml does not define.
std::optional<GgmlBlock> ggml_block(uint32_t type);

// Whether dequantize_blocks() reads `type`.
bool ggml_can_dequantize(GgmlType type);

// Dequantizes `blocks` whole blocks of `type` from `src` into `dst` (blocks x elements
// floats). `type` must be one ggml_can_dequantize() accepts.
void dequantize_blocks(GgmlType type, const uint8_t* src, int64_t blocks, float* dst);

}  // namespace kivi
