// What every mode gets: the validated config, the loaded plugins and where to print.
#pragma once

#include <iosfwd>
#include <memory>

#include "host_config.h"
#include "kivi/attention/attention.h"
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

// A cache factory and the attention backend that reads its views, checked together.
struct CachePairing {
  std::shared_ptr<KVCacheFactory> factory;
  std::shared_ptr<const Attention> attention;
  std::string cache_name, attention_name;
  std::string table;  // where the cache's options came from, for messages ("cache", ...)
  // The plugins and options that made them (the attention's name resolved): what tensor
  // parallelism sends the other ranks, which make the same.
  PluginChoice cache_choice, attention_choice;
};

// The cache `cache` and its attention: `attention` when chosen explicitly, else the one the
// cache names (KVCacheFactory::attention()). Throws, naming run.toml and the table, when the
// attention cannot read the cache's view format (Attention::supports) or an option is wrong.
// `where`: "" for [cache] and [attention], or a compare variant's "compare.variants[2]".
CachePairing make_cache_pairing(const HostContext& context, const PluginChoice& cache,
                                const PluginChoice& attention, const std::string& where = "");

// Runs context.config.mode (one of known_modes()).
int run_mode(HostContext& context);
// `kivi-host MODE --help`: what the mode does and the run.toml tables and keys it reads.
void print_mode_help(std::ostream& out, const std::string& mode);

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
