// What the tokens stored in a cache use, by component, as opposed to what the cache holds
// (MemoryStats, which also counts capacity preallocated or grown ahead of the tokens). Each
// cache reports it (KVCache::usage()): only the cache knows where each token of its format
// lives, at how many bits. dense_cache_usage() reads dense views, the default.
#pragma once

#include <cstdint>

namespace kivi {

class KVCache;

struct CacheUsage {
  int64_t sequences = 0;
  int64_t tokens = 0;           // summed over sequences
  int64_t key_quantized = 0;    // of those, tokens whose keys are quantized
  int64_t value_quantized = 0;  // tokens whose values are quantized
  int64_t elements = 0;         // K and V elements of the tokens, all layers
  int64_t code_bytes = 0;       // packed codes of the quantized keys and values
  int64_t scale_bytes = 0;      // their scales and minima
  int64_t full_bytes =
      0;  // K/V in full precision: a KIVI residual window's tokens, or a dense cache
  int64_t full_element_bits = 0;           // bits of one full-precision element (the cache's dtype)
  int64_t key_bits = 16, value_bits = 16;  // bits per quantized key / value code (16: none)
  bool quantizing = false;  // keys or values stored below 16 bits (even if none is quantized yet)

  int64_t total() const { return code_bytes + scale_bytes + full_bytes; }
  // An fp16 cache of the same tokens: 16 bits per element.
  int64_t fp16_bytes() const { return 2 * elements; }
  // bytes as bits per stored K/V element (the components' figures add up to the total's).
  double bits(int64_t bytes) const {
    return elements > 0 ? 8.0 * static_cast<double>(bytes) / elements : 0.0;
  }
};

// cache.usage(), for callers that read better with a function.
CacheUsage cache_usage(const KVCache& cache);
// The usage of a cache whose views are all dense (throws naming the format otherwise).
CacheUsage dense_cache_usage(const KVCache& cache);

}  // namespace kivi
