// What every mode gets: the validated config, the loaded plugins and where to print.
#pragma once

#include <iosfwd>
#include <memory>

#include "host_config.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/registry.h"

namespace kivi::host {

struct HostContext {
  HostConfig config;
  Registry registry;
  std::ostream& out;
  std::ostream& err;
};

// Loads plugins from the config's folders and the default one; refusals are warnings on err.
void load_plugins(HostContext& context);

// Creates the configured cache factory; option errors point into run.toml.
std::shared_ptr<KVCacheFactory> make_cache_factory(const HostContext& context);

// Runs context.config.mode (one of known_modes()).
int run_mode(HostContext& context);

int run_plugins_mode(HostContext& context);
int run_check_mode(HostContext& context);
int run_tokenize_mode(HostContext& context);
int run_memory_mode(HostContext& context);
int run_generate_mode(HostContext& context);
int run_perplexity_mode(HostContext& context);
int run_compare_mode(HostContext& context);
int run_bench_mode(HostContext& context);
int run_chat_mode(HostContext& context);
int run_serve_mode(HostContext& context);

}  // namespace kivi::host
