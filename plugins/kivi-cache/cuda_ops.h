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

// One decode step's append to every row of a layer in one launch (cuda::DecodeAppend): k, v
// [B, H, 1, D] in the storage dtype, and per row the key residual slot of its new key (-1: the
// row adds nothing), the value ring slot of its new value, and the value position whose
// deferred flush goes first (-1: none). False (nothing done): the kernel cannot serve it, and
// the caller takes the flush kernels and copies, which compute the same.
// Paged parts (parts.paged()): flush_page[b] is the page that holds position flush_position[b].
struct DecodeAppendRows {
  std::vector<int> key_slot, value_slot, flush_position;  // [B] each
  std::vector<int> flush_page;                            // [B] when paged, else empty
};
bool cuda_decode_append(const at::Tensor& k, const at::Tensor& v, KiviParts& parts,
                        const DecodeAppendRows& rows);

// Where the packed parts of each sequence live (the kernels' BlockTable, cuda/kivi_kernels.h):
// position p of sequence b is token p % page_tokens of page table[b][p / page_tokens], the first
// index of every packed tensor of KiviParts (the residual windows stay per sequence). Undefined
// table: the parts are contiguous per sequence, and the kernels get the identity table.
struct PackedPages {
  at::Tensor table;         // [B, pages per sequence] int32, on the parts' GPU
  int64_t page_tokens = 0;  // a multiple of group_size
};

// Fused decode over a KIVI view: q [B, Hq, 1, D]; counts[b] is 0 (idle row, output 0) or 1.
// Returns [B, Hq, 1, D] in q's dtype, written into `into` when given (contiguous, that shape;
// tests pass a poisoned buffer). `why` (if given) receives the reason when it cannot serve.
// fp16/bf16 run on tensor cores unless `cuda_cores_only` (tests and benchmarks compare both).
std::optional<at::Tensor> cuda_decode_attention(
    const at::Tensor& q, const KiviParts& parts, const std::vector<int64_t>& lengths,
    std::span<const int64_t> counts, const AttentionParams& params, std::string* why = nullptr,
    const at::Tensor& into = {}, bool cuda_cores_only = false, const PackedPages& pages = {});

// Fused chunk attention over a KIVI view taken before the chunk's append (KiviAttention::chunk):
// q [B, Hq, T, D], the chunk's own k, v [B, Hkv, T, D] in full precision, lengths[b] the tokens
// stored (the chunk's first position), counts[b] its new tokens (empty: all T). Token t of row b
// attends to everything stored and causally to the chunk's own positions <= t. Returns
// [B, Hq, T, D] in q's dtype, zero past each row's count; nullopt (and `why`) when the kernel
// cannot serve it: fp32, a sliding window, unaligned or non-contiguous storage, sizes it lacks.
std::optional<at::Tensor> cuda_chunk_attention(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const KiviParts& parts,
    const std::vector<int64_t>& lengths, std::span<const int64_t> counts,
    const AttentionParams& params, std::string* why = nullptr, const PackedPages& pages = {});

}  // namespace kivi::kivi_cache
