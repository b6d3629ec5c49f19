#include <filesystem>
#include <ostream>

#include "host_context.h"

namespace kivi::host {

void load_plugins(HostContext& context) {
  for (const auto& dir : context.config.plugin_dirs) context.registry.load_dir(dir);
  if (context.config.default_plugin_dir) {
    const auto dir = Registry::default_plugin_dir();
    if (std::filesystem::is_directory(dir))
      context.registry.load_dir(dir);
    else if (context.config.plugin_dirs.empty())
      context.err << "warning: default plugin folder " << dir.string() << " does not exist\n";
  }
  for (const auto& refused : context.registry.refused())
    context.err << "warning: plugin library " << refused.file << ": " << refused.reason << "\n";
}

namespace {

template <class Interface>
std::shared_ptr<Interface> create_plugin(const HostContext& context, const PluginChoice& choice,
                                         const std::string& table) {
  try {
    return context.registry.create<Interface>(choice.name, choice.options_toml);
  } catch (const Error& e) {
    throw Error(map_plugin_error(e.what(), context.config.file.string(), table, choice.positions));
  }
}

}  // namespace

std::shared_ptr<KVCacheFactory> make_cache_factory(const HostContext& context) {
  return create_plugin<KVCacheFactory>(context, context.config.cache, "cache");
}

CachePairing make_cache_pairing(const HostContext& context, const PluginChoice& cache,
                                const PluginChoice& attention, const std::string& where) {
  const std::string prefix = where.empty() ? "" : where + ".";
  const std::string attention_table = prefix + "attention";
  CachePairing p;
  p.table = prefix + "cache";
  p.factory = create_plugin<KVCacheFactory>(context, cache, p.table);
  p.cache_name = cache.name;
  const std::string format = p.factory->view_format();
  if (attention.explicit_choice) {
    p.attention_name = attention.name;
    p.attention = create_plugin<Attention>(context, attention, attention_table);
  } else {
    p.attention_name = p.factory->attention();
    p.attention = create_plugin<Attention>(context, PluginChoice{p.attention_name, "", {}, false},
                                           attention_table);
  }
  p.cache_choice = cache;
  p.attention_choice =
      attention.explicit_choice ? attention : PluginChoice{p.attention_name, "", {}, true};
  check(p.attention->supports(format),
        context.config.file.string() + ": [" + attention_table + "] backend \"" + p.attention_name +
            "\" cannot read the \"" + format + "\" views of cache \"" + cache.name + "\"" +
            (attention.explicit_choice
                 ? " (leave [" + attention_table + "] out for the cache's own, \"" +
                       p.factory->attention() + "\")"
                 : " (the attention the cache names; a packaging error of its plugin)"));
  return p;
}

}  // namespace kivi::host
