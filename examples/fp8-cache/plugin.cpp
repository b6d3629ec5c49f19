// The fp8 plugins: a "kv_cache" in float8 e4m3 and the "attention" that reads it.
#include "kivi/plugin/plugin.h"
#include "fp8_cache.h"

namespace {

std::unique_ptr<kivi::KVCacheFactory> make_cache(kivi::ConfigTable&) {
  return std::make_unique<fp8_cache::Fp8CacheFactory>();
}
std::unique_ptr<kivi::Attention> make_attention(kivi::ConfigTable&) {
  return std::make_unique<fp8_cache::Fp8Attention>();
}

}  // namespace

KIVI_PLUGIN(
    fp8_cache, "fp8-cache", "1.0.0",
    kivi::plugin::factory<kivi::KVCacheFactory, &make_cache>(
        "fp8", "KV cache in float8 e4m3 with per-token scales (third-party example)"),
    kivi::plugin::factory<kivi::Attention, &make_attention>("fp8", "attention over fp8-e4m3 views"))
