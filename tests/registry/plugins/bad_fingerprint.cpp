// A plugin built with another toolchain/libtorch: same ABI version, different fingerprint.
#include "kivi/plugin/plugin_abi.h"

namespace {
int never_create(const char*, void**, char*, size_t) {
  return 1;
}
void never_destroy(void*) {}
const kivi_factory_v1 kFactories[] = {{sizeof(kivi_factory_v1), "kv_cache", "mismatched",
                                       "never loads", &never_create, &never_destroy}};
}  // namespace

extern "C" __attribute__((visibility("default"))) const kivi_plugin_v1* kivi_plugin_entry() {
  static const kivi_plugin_v1 descriptor{KIVI_PLUGIN_ABI_VERSION,
                                         sizeof(kivi_plugin_v1),
                                         "bad-fingerprint",
                                         "1.0.0",
                                         "abi=1 compiler=gcc-0.0 stdlib=libstdc++-cxx11 "
                                         "torch=1.0.0 cuda=none headers=0000000000000000",
                                         1,
                                         kFactories};
  return &descriptor;
}
