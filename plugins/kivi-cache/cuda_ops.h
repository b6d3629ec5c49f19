// The KIVI cache's CUDA paths as ATen-level calls: they take tensors, check that the kernels
// in cuda/ can serve them, and launch on the current stream. Each returns false / nullopt when
// it cannot serve (CPU tensors, a build without CUDA, unsupported sizes), and the caller then
// uses its ATen path, which computes the same thing.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include "kivi/attention/attention.h"
#include "kivi/kivi_cache/kivi_parts.h"

namespace kivi::kivi_cache {

// Quantizes x (keys [n, H, groups * G, D] / values [n, H, T, D], the storage dtype, on the GPU)
// straight into the destination views (narrowed cache storage).
bool cuda_store_keys(const at::Tensor& x, int64_t group_size, int64_t bits, at::Tensor codes,
                     at::Tensor scale, at::Tensor min);
bool cuda_store_values(const at::Tensor& x, int64_t group_size, int64_t bits, at::Tensor codes,
                       at::Tensor scale, at::Tensor min);

// Fused decode over a KIVI view: q [B, Hq, 1, D]; counts[b] is 0 (idle row, output 0) or 1.
// Returns [B, Hq, 1, D] in q's dtype, written into `into` when given (contiguous, that shape;
// tests pass a poisoned buffer). `why` (if given) receives the reason when it cannot serve.
// fp16/bf16 run on tensor cores unless `cuda_cores_only` (tests and benchmarks compare both).
std::optional<at::Tensor> cuda_decode_attention(
    const at::Tensor& q, const KiviParts& parts, const std::vector<int64_t>& lengths,
    std::span<const int64_t> counts, const AttentionParams& params, std::string* why = nullptr,
    const at::Tensor& into = {}, bool cuda_cores_only = false);

}  // namespace kivi::kivi_cache
