// The "kivi" plugins: a "kv_cache" holding KIVI-packed keys and values, and an "attention"
// backend that reads its views block by block.
#include "kivi/plugin/plugin.h"
#include "kivi_attention.h"
#include "kivi_cache.h"

namespace {

using kivi::ConfigTable;

std::unique_ptr<kivi::KVCacheFactory> make_cache(ConfigTable& o) {
  kivi::kivi_cache::KiviOptions options;
  options.k_bits = o.get_int_choice("k_bits", options.k_bits, {2, 4, 8, 16});
  options.v_bits = o.get_int_choice("v_bits", options.v_bits, {2, 4, 8, 16});
  options.group_size = o.get_int_in("group_size", options.group_size, 1, 4096);
  options.residual_length =
      o.get_int_in("residual_length", options.residual_length, 0, int64_t{1} << 20);
  if (options.residual_length % options.group_size != 0)
    o.fail("residual_length",
           "got " + std::to_string(options.residual_length) +
               ", expected 0 or a multiple of group_size = " + std::to_string(options.group_size));
  for (auto [key, bits] :
       {std::pair<const char*, int64_t>{"k_bits", options.k_bits}, {"v_bits", options.v_bits}})
    if (bits < 16 && options.group_size % (32 / bits) != 0)
      o.fail("group_size", "got " + std::to_string(options.group_size) + " with " + key + " = " +
                               std::to_string(bits) + ", expected a multiple of " +
                               std::to_string(32 / bits) + " (codes per int32 word)");
  // Quantized stores grow in chunks of this many tokens when max_tokens is not set.
  options.chunk_tokens = o.get_int_in("chunk_tokens", options.chunk_tokens, 1, int64_t{1} << 20);
  // Tokens per page when the cache is paged (the host asks for a page pool). Checked here when
  // given; the default is checked only if the cache is paged (check_options), so that a group
  // size no page can hold (48) still makes contiguous caches.
  const bool page_given = o.has("page_tokens");
  options.page_tokens = o.get_int_in("page_tokens", options.page_tokens, 1, int64_t{1} << 20);
  if (page_given && (options.page_tokens % options.group_size != 0 ||
                     (options.page_tokens & (options.page_tokens - 1)) != 0))
    o.fail("page_tokens", "got " + std::to_string(options.page_tokens) +
                              ", expected a power of two and a multiple of group_size = " +
                              std::to_string(options.group_size));
  return std::make_unique<kivi::kivi_cache::KiviCacheFactory>(options);
}

std::unique_ptr<kivi::Attention> make_attention(ConfigTable& o) {
  return std::make_unique<kivi::kivi_cache::KiviAttention>(
      o.get_int_in("block_tokens", 256, 1, int64_t{1} << 20));
}

}  // namespace

KIVI_PLUGIN(kivi_kivi_cache, "kivi-kivi-cache", "0.1.0",
            kivi::plugin::factory<kivi::KVCacheFactory, &make_cache>(
                "kivi", "KIVI KV cache: packed 2/4/8-bit keys per channel and values per token"),
            kivi::plugin::factory<kivi::Attention, &make_attention>(
                "kivi", "attention over KIVI (and dense) views, dequantizing a block at a time"))
