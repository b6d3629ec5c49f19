// Reading a KIVI view back as full-precision tensors, a range of positions at a time: what
// CacheView::expand (everything, for reference checks) and the chunked CPU attention (one
// block at a time) share.
#pragma once

#include <cstdint>
#include <vector>

#include "kivi/cache/cache_types.h"
#include "kivi/kivi_cache/kivi_parts.h"

namespace kivi::kivi_cache {

// A run of packed positions of one sequence that lies in one slice of the packed tensors: their
// first index `index` (the sequence when contiguous, a page when paged), positions
// [first, first + count) within it.
struct PackedRun {
  int64_t index, first, count;
};
// The runs of positions [p0, p1) of sequence b, in order.
std::vector<PackedRun> packed_runs(const KiviParts& parts, int64_t b, int64_t p0, int64_t p1);
// Dimensions 1 and 2 of `t` ([N, H, units, ...] of packed storage, `unit` positions per entry
// of dimension 2) over `runs`, concatenated: [H, positions / unit, ...].
at::Tensor gather_runs(const at::Tensor& t, const std::vector<PackedRun>& runs, int64_t unit);

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
