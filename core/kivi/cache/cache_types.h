// Value types around KVCache: the geometry a cache is made for, what it will cost before it
// exists (CacheSpec), the bytes it really holds (MemoryStats) and what attention reads
// (CacheView).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "kivi/util/error.h"

namespace kivi {

// The shape of a cache, known before it exists.
struct CacheGeometry {
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_batch = 1;   // sequence slots; append() always passes this many rows
  int64_t max_tokens = 0;  // per-sequence capacity; 0 = grow on demand (chunk-grown storage)
  at::ScalarType dtype = at::kFloat;  // dtype of the K/V handed to append()
  at::Device device = at::kCPU;
  // > 0: paged storage, one pool of this many pages shared by every sequence slot
  // (CacheSpec::page_tokens tokens each; a cache that cannot page refuses it); 0: every slot
  // holds its own storage.
  int64_t pool_pages = 0;
};

// What a backend will cost for one geometry, before any allocation: lets the host plan the
// largest batch or context that fits a memory budget.
struct CacheSpec {
  std::string description;  // e.g. "fp16" or "kivi k2/v2 g32 r128"
  // Exact bytes the cache holds for one sequence of `tokens` tokens over all layers, once
  // storage is sized exactly (preallocated with max_tokens == tokens), metadata included.
  std::function<int64_t(int64_t tokens)> bytes_per_sequence;
  // Bytes that do not scale with the batch (workspace), over all layers.
  int64_t fixed_bytes = 0;
  // Bits per K/V element of the payload alone (codes, no scales, minima or residual): the
  // figure research write-ups quote. 0 = no such distinction (full precision).
  double code_bits = 0;
  // The full-precision window a quantizing cache keeps per sequence (tokens), for the
  // write-up's accounting in `kivi-host memory`; 0 = none.
  int64_t residual_length = 0;
  // What a write-up's accounting leaves out for this cache (printed under the memory table);
  // "" = nothing to add.
  std::string accounting_notes;
  // Paged storage (CacheGeometry::pool_pages > 0); all 0 for a cache that cannot page. A paged
  // cache holds exactly pool_pages * bytes_per_page + max_batch * bytes_per_slot: tokens per
  // page, one page over all layers, and what each sequence slot holds beside its pages (its
  // full-precision windows and its block table row) over all layers.
  int64_t page_tokens = 0;
  int64_t bytes_per_page = 0;
  int64_t bytes_per_slot = 0;
};

// Bytes a live cache holds, split by component. "Held" means allocated by the cache, so
// capacity reserved for future tokens counts. total() equals the summed storage of every
// tensor the cache owns (KVCache::owned_tensors()), which the conformance suite checks.
struct MemoryStats {
  int64_t payload_bytes = 0;     // K/V payload: quantized codes, or full-precision K/V
  int64_t scale_bytes = 0;       // quantization scales and minima (zero points)
  int64_t residual_bytes = 0;    // full-precision residual windows of a quantized cache
  int64_t workspace_bytes = 0;   // scratch kept between calls
  int64_t tokens = 0;            // tokens stored, summed over sequences (one layer's count)
  int64_t quantized_tokens = 0;  // of those, tokens whose keys or values are quantized
  int64_t residual_tokens = 0;   // of those, tokens kept only in full precision
  int64_t total() const { return payload_bytes + scale_bytes + residual_bytes + workspace_bytes; }
  // Average bits per stored K or V element, metadata included (0 when empty).
  double bits_per_element(const CacheGeometry& g) const {
    const double elements =
        2.0 * static_cast<double>(tokens) * g.num_layers * g.num_kv_heads * g.head_dim;
    return elements > 0 ? 8.0 * static_cast<double>(total()) / elements : 0.0;
  }
};

// The page pool of a paged cache (CacheGeometry::pool_pages > 0); all zero for a contiguous one.
struct PoolStats {
  int64_t pages = 0;        // the pool's capacity
  int64_t page_tokens = 0;  // tokens per page
  int64_t used = 0;         // pages with an owner
  int64_t peak_used = 0;    // the most pages with an owner at once since the cache was made
  int64_t shared = 0;       // of those, pages with more than one owner (forks, shared prefixes)
  int64_t cached = 0;       // pages without an owner whose contents are kept for a prefix hit
  int64_t page_bytes = 0;   // one page over all layers
  // Prefix sharing since the cache was made: pages looked up and pages found (shared).
  int64_t prefix_queries = 0, prefix_hits = 0;
  int64_t free() const { return pages - used; }
};

// A view's format: "<name>/<version>". "dense/1" (DenseKV) is the core's; any other format
// belongs to the plugin that defines it, in its own public header, together with the payload
// struct; an attention backend reads a format only if it says so (Attention::supports). The
// version changes whenever the payload's layout or meaning does.
inline constexpr std::string_view kDenseFormat = "dense/1";

// Dense K/V of one layer. Row b holds lengths[b] valid tokens at the front; the rest of the
// capacity is unspecified.
struct DenseKV {
  at::Tensor k;                  // [batch, kv_heads, capacity, head_dim], geometry dtype/device
  at::Tensor v;                  // [batch, kv_heads, capacity, head_dim]
  std::vector<int64_t> lengths;  // [batch] valid tokens per sequence (host)
};

// What an Attention backend reads for one layer. Cheap to copy (tensors are shared handles into
// the cache's storage, valid until the cache is next modified).
struct CacheView {
  std::string format{kDenseFormat};
  std::vector<int64_t> lengths;  // [batch] tokens stored per sequence (host)
  DenseKV dense;                 // format == kDenseFormat
  // Any other format: the format owner's payload struct, opaque to the core. Read it with
  // payload_as<T>(format), which checks the format id first (no RTTI across libraries).
  std::shared_ptr<const void> payload;
  // Any view expands to dense K/V (a copy for quantized formats), for reference checks only:
  // the fast paths never call this.
  std::function<DenseKV()> expand;

  bool is_dense() const { return format == kDenseFormat; }
  // The payload as the struct that `expected` (the format id, with its version) defines.
  template <class T>
  const T& payload_as(std::string_view expected) const {
    check(format == expected && payload != nullptr,
          "cache view: expected format \"" + std::string(expected) + "\", got \"" + format + "\"" +
              (payload ? "" : " without a payload"));
    return *static_cast<const T*>(payload.get());
  }
};

}  // namespace kivi
