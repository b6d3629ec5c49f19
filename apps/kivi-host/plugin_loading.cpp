#include <filesystem>
#include <ostream>

#include "host_context.h"

namespace kivi::host {

void load_plugins(HostContext& context) {
  for (const auto& dir : context.config.plugin_dirs) context.registry.load_dir(dir);
  if (context.config.default_plugin_dir) {
    const auto dir = Registry::default_plugin_dir();
    if (std::filesystem::is_directory(dir)) context.registry.load_dir(dir);
    else if (context.config.plugin_dirs.empty())
      context.err << "warning: default plugin folder " << dir.string() << " does not exist\n";
  }
  for (const auto& refused : context.registry.refused())
    context.err << "warning: plugin library " << refused.file << ": " << refused.reason << "\n";
}

std::shared_ptr<KVCacheFactory> make_cache_factory(const HostContext& context) {
  const PluginChoice& choice = context.config.cache;
  try {
    return context.registry.create<KVCacheFactory>(choice.name, choice.options_toml);
  } catch (const Error& e) {
    throw Error(map_plugin_error(e.what(), context.config.file.string(), "cache", choice.positions));
  }
}

}  // namespace kivi::host
