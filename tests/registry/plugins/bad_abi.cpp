// A plugin built for another ABI version: the registry must refuse it before reading more.
#include "kivi/plugin/plugin_abi.h"

extern "C" __attribute__((visibility("default"))) const kivi_plugin_v1* kivi_plugin_entry() {
  static const kivi_plugin_v1 descriptor{KIVI_PLUGIN_ABI_VERSION + 41,
                                         sizeof(kivi_plugin_v1),
                                         "bad-abi",
                                         "9.9.9",
                                         "whatever",
                                         0,
                                         nullptr};
  return &descriptor;
}
