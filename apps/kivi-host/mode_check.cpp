// `kivi-host check`: validates run.toml and resolves every plugin it names, so a typo or a
// cache/attention mismatch shows before any model is loaded.
#include <ostream>

#include "host_context.h"
#include "kivi/attention/attention.h"

namespace kivi::host {

int run_check_mode(HostContext& context) {
  auto factory = make_cache_factory(context);
  context.out << "config " << context.config.file.string() << ": valid\n";
  context.out << "cache: " << context.config.cache.name << " (view kind "
              << to_string(factory->view_kind()) << ")\n";
  if (context.registry.contains(Attention::kPluginKind, context.config.attention.name)) {
    auto attention = context.registry.create<Attention>(context.config.attention.name,
                                                        context.config.attention.options_toml);
    if (!attention->supports(factory->view_kind()))
      throw Error(context.config.file.string() + ": attention backend \"" + context.config.attention.name +
                  "\" cannot read the \"" + to_string(factory->view_kind()) + "\" views of cache \"" +
                  context.config.cache.name + "\"");
    context.out << "attention: " << context.config.attention.name << "\n";
  } else if (context.config.attention.explicit_choice) {
    // Names the attention plugins that are loaded.
    context.registry.create<Attention>(context.config.attention.name, "");
  }
  return 0;
}

}  // namespace kivi::host
