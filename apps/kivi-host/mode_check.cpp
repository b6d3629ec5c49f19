// `kivi-host check`: validates run.toml and resolves every plugin it names, so a typo or a
// cache/attention mismatch shows before any model is loaded.
#include <ostream>

#include "host_context.h"
#include "kivi/attention/attention.h"

namespace kivi::host {

int run_check_mode(HostContext& context) {
  const HostConfig& cfg = context.config;
  const CachePairing pairing = make_cache_pairing(context, cfg.cache, cfg.attention);
  context.out << "config " << cfg.file.string() << ": valid\n";
  context.out << "cache: " << pairing.cache_name << " (view format "
              << pairing.factory->view_format() << ")\n";
  context.out << "attention: " << pairing.attention_name
              << (cfg.attention.explicit_choice ? "\n" : " (the cache's)\n");
  for (size_t v = 0; v < cfg.compare.variants.size(); ++v)
    make_cache_pairing(context, cfg.compare.variants[v].cache, cfg.compare.variants[v].attention,
                       "compare.variants[" + std::to_string(v) + "]");
  return 0;
}

}  // namespace kivi::host
