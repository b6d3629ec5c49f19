// A well-formed drop-in plugin that claims kv_cache "fp16", which kivi-fp-cache already
// provides, beside a name of its own ("fp16-dropin"): only the clashing factory is refused.
#include "kivi/cache/kv_cache.h"
#include "kivi/plugin/plugin.h"
#include "kivi/util/error.h"

namespace {
std::unique_ptr<kivi::KVCacheFactory> make(kivi::ConfigTable&) {
  throw kivi::Error("the duplicate must never be created");
}
std::unique_ptr<kivi::KVCacheFactory> make_own(kivi::ConfigTable&) {
  throw kivi::Error("fp16-dropin is only for the registry test");
}
}  // namespace

KIVI_PLUGIN(kivi_test_duplicate, "kivi-test-duplicate", "0.0.1",
            kivi::plugin::factory<kivi::KVCacheFactory, &make>("fp16", "a duplicate of fp16"),
            kivi::plugin::factory<kivi::KVCacheFactory, &make_own>("fp16-dropin",
                                                                   "a name of its own"))
