// The fp cache plugin's factories ("fp32", "fp16", "bf16") straight from its static library,
// for tests that link kivi_fp_cache_static (the conformance suite, the GPU append test).
#pragma once

#include <memory>
#include <string>

#include "kivi/cache/kv_cache.h"
#include "kivi/plugin/plugin.h"
#include "kivi_catch.h"

KIVI_DECLARE_PLUGIN(kivi_fp_cache);

namespace kivi::test {

inline std::unique_ptr<KVCacheFactory> fp_cache_factory(const std::string& name) {
  const kivi_plugin_v1* plugin = kivi_plugin_descriptor_kivi_fp_cache();
  for (uint32_t i = 0; i < plugin->factory_count; ++i) {
    const kivi_factory_v1& f = plugin->factories[i];
    if (name != f.name) continue;
    void* object = nullptr;
    char error[512] = {};
    REQUIRE(f.create("", &object, error, sizeof error) == 0);
    return std::unique_ptr<KVCacheFactory>(static_cast<KVCacheFactory*>(object));
  }
  FAIL("no fp cache factory " << name);
  return nullptr;
}

}  // namespace kivi::test
