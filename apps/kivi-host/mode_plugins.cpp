// `kivi-host plugins`: what was loaded from where, and what was refused and why.
#include <algorithm>
#include <iomanip>
#include <ostream>

#include "host_context.h"

namespace kivi::host {

int run_plugins_mode(HostContext& context) {
  const auto plugins = context.registry.list();
  size_t kind_w = 4, name_w = 4, version_w = 7;
  for (const auto& p : plugins) {
    kind_w = std::max(kind_w, p.kind.size());
    name_w = std::max(name_w, p.name.size());
    version_w = std::max(version_w, p.version.size());
  }
  auto& out = context.out;
  out << std::left << std::setw(kind_w + 2) << "KIND" << std::setw(name_w + 2) << "NAME"
      << std::setw(version_w + 2) << "VERSION"
      << "FILE\n";
  for (const auto& p : plugins)
    out << std::setw(kind_w + 2) << p.kind << std::setw(name_w + 2) << p.name
        << std::setw(version_w + 2) << p.version << p.file << "\n";
  out << plugins.size() << " plugins loaded";
  if (!context.registry.refused().empty())
    out << ", " << context.registry.refused().size()
        << " refused (libraries, or duplicate names; see warnings)";
  out << "\n";
  return 0;
}

}  // namespace kivi::host
