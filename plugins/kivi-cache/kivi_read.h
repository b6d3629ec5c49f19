// Reading a KIVI view back as full-precision tensors, a range of positions at a time: what
// CacheView::expand (everything, for reference checks) and the chunked CPU attention (one
// block at a time) share.
#pragma once

#include <cstdint>
#include <vector>

#include "kivi/cache/cache_types.h"
#include "kivi/kivi_cache/kivi_parts.h"

namespace kivi::kivi_cache {

// Keys / values of sequence b at positions [p0, p1) as [H, p1 - p0, D] in `dtype`, taken from
// the quantized store below key_quantized[b] / value_quantized[b] and from the residual above.
at::Tensor read_keys(const KiviParts& parts, int64_t b, int64_t p0, int64_t p1,
                     at::ScalarType dtype);
at::Tensor read_values(const KiviParts& parts, int64_t b, int64_t p0, int64_t p1,
                       at::ScalarType dtype);

// Dense K/V of every sequence ([B, H, max length, D] in `dtype`, zero past each length).
DenseKV expand_kivi(const KiviParts& parts, const std::vector<int64_t>& lengths,
                    at::ScalarType dtype);

}  // namespace kivi::kivi_cache
