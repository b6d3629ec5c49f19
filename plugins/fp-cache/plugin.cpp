// The "kv_cache" plugins fp16, bf16 and fp32: one library, three storage dtypes.
#include "kivi/plugin/plugin.h"
#include "fp_cache.h"

namespace {

using kivi::ConfigTable;
using kivi::KVCacheFactory;

std::unique_ptr<KVCacheFactory> make(at::ScalarType dtype, ConfigTable& options) {
  // Storage grows in chunks of this many tokens when max_tokens is not set.
  const int64_t chunk = options.get_int_in("chunk_tokens", 256, 1, int64_t{1} << 20);
  return std::make_unique<kivi::fp_cache::FpCacheFactory>(dtype, chunk);
}
std::unique_ptr<KVCacheFactory> make_fp16(ConfigTable& o) {
  return make(at::kHalf, o);
}
std::unique_ptr<KVCacheFactory> make_bf16(ConfigTable& o) {
  return make(at::kBFloat16, o);
}
std::unique_ptr<KVCacheFactory> make_fp32(ConfigTable& o) {
  return make(at::kFloat, o);
}

}  // namespace

KIVI_PLUGIN(
    kivi_fp_cache, "kivi-fp-cache", "0.1.0",
    kivi::plugin::factory<KVCacheFactory, &make_fp16>("fp16",
                                                      "full-precision KV cache, stored in float16"),
    kivi::plugin::factory<KVCacheFactory, &make_bf16>(
        "bf16", "full-precision KV cache, stored in bfloat16"),
    kivi::plugin::factory<KVCacheFactory, &make_fp32>("fp32",
                                                      "full-precision KV cache, stored in float32"))
