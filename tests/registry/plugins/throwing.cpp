// A plugin whose create() throws: the exception must become an error message, not a crash.
#include <stdexcept>

#include "kivi/cache/kv_cache.h"
#include "kivi/plugin/plugin.h"

namespace {
std::unique_ptr<kivi::KVCacheFactory> make(kivi::ConfigTable& options) {
  options.get_int("size", 0);
  throw std::runtime_error("this plugin always fails to create");
}
}  // namespace

KIVI_PLUGIN(kivi_test_throwing, "kivi-test-throwing", "0.0.1",
            kivi::plugin::factory<kivi::KVCacheFactory, &make>("throwing", "fails on purpose"))
