// Device side of BlockTable (kivi_kernels.h): where a row's packed position lives. Pages hold a
// power of two of tokens (launch_decode_attention checks), so a position splits by shift and mask;
// the identity table (pages == nullptr) costs no load, a paged one a load per page entered.
#pragma once

#include <cstdint>

#include "kivi_kernels.h"

namespace kivi::kivi_cache::cuda {

// Page (first index of the packed storage tensors) and token within it of position p of row b.
struct PackedAt {
  int64_t page;
  int local;
};
__device__ __forceinline__ int64_t page_of(const BlockTable& table, int b, int block) {
  return table.pages == nullptr ? int64_t{b}
                                : int64_t{table.pages[int64_t{b} * table.stride + block]};
}
__device__ __forceinline__ PackedAt packed_at(const BlockTable& table, int b, int p) {
  const int block = p >> (__ffs(table.page_tokens) - 1);
  return {page_of(table, b, block), p & (table.page_tokens - 1)};
}

// packed_at for one warp walking its positions in increasing order: the page id is loaded only
// when the walk enters another page (under the identity table, once), so the copies a tile
// issues do not wait on a table load each time.
struct PageCursor {
  int block = -1;
  int64_t page = 0;
  __device__ __forceinline__ PackedAt at(const BlockTable& table, int b, int p) {
    const int next = p >> (__ffs(table.page_tokens) - 1);
    if (next != block) {
      block = next;
      page = page_of(table, b, next);
    }
    return {page, p & (table.page_tokens - 1)};
  }
};

}  // namespace kivi::kivi_cache::cuda
