// A well-formed plugin that claims kv_cache "fp16", which kivi-fp-cache already provides.
#include "kivi/cache/kv_cache.h"
#include "kivi/plugin/plugin.h"
#include "kivi/util/error.h"

namespace {
std::unique_ptr<kivi::KVCacheFactory> make(kivi::ConfigTable&) {
  throw kivi::Error("the duplicate must never be created");
}
}  // namespace

KIVI_PLUGIN(kivi_test_duplicate, "kivi-test-duplicate", "0.0.1",
            kivi::plugin::factory<kivi::KVCacheFactory, &make>("fp16", "a duplicate of fp16"))
