// The one table of modes: known_modes() (validation, --help) and dispatch both read it.
#include <functional>
#include <map>

#include "host_context.h"

namespace kivi::host {
namespace {

using ModeFn = std::function<int(HostContext&)>;

const std::map<std::string, ModeFn>& mode_table() {
  static const std::map<std::string, ModeFn> modes = {
      {"bench", run_bench_mode},
      {"chat", run_chat_mode},
      {"check", run_check_mode},
      {"compare", run_compare_mode},
      {"memory", run_memory_mode},
      {"generate", run_generate_mode},
      {"perplexity", run_perplexity_mode},
      {"plugins", run_plugins_mode},
      {"serve", run_serve_mode},
      {"tokenize", run_tokenize_mode},
  };
  return modes;
}

}  // namespace

const std::vector<std::string>& known_modes() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& [name, fn] : mode_table()) out.push_back(name);
    return out;
  }();
  return names;
}

int run_mode(HostContext& context) { return mode_table().at(context.config.mode)(context); }

}  // namespace kivi::host
