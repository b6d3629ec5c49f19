// The plugin registry: finds plugin libraries at run time (Boost.DLL), checks their handshake
// and keeps their factories by (kind, name). Libraries stay loaded for the life of the process
// (objects they made may outlive the registry). A library that fails any check is refused
// with a message saying why, and the others still load. A factory whose (kind, name) is
// already registered is refused alone (the first one loaded stays in use), not its library.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kivi/plugin/plugin_abi.h"
#include "kivi/util/error.h"

namespace kivi {

struct PluginInfo {
  std::string kind;
  std::string name;
  std::string summary;
  std::string library;  // the library's own name
  std::string version;
  std::string file;  // path it was loaded from, or "<static>"
};

struct RefusedPlugin {
  std::string file;
  std::string reason;
};

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // The folder plugins are installed into, relative to the running executable
  // (<prefix>/bin/../lib/kivi/plugins), which is also where the build tree puts them.
  static std::filesystem::path default_plugin_dir();

  // Loads every shared library in `dir` (not recursive), in name order. Refusals are recorded
  // (refused()) and do not stop the others. A missing folder is an error.
  void load_dir(const std::filesystem::path& dir);
  // Loads one library; returns false and records the reason if refused (true if at least one
  // of its factories registered; skipped duplicates are recorded in refused() either way).
  bool load_file(const std::filesystem::path& file);
  // Registers a descriptor linked into this program (tests); same checks as a library.
  bool add_static(const kivi_plugin_v1* descriptor, const std::string& origin = "<static>");

  const std::vector<RefusedPlugin>& refused() const { return refused_; }
  std::vector<PluginInfo> list() const;
  bool contains(const std::string& kind, const std::string& name) const;
  std::vector<std::string> names(const std::string& kind) const;

  // Makes an object of plugin (Interface::kPluginKind, name) from options given as TOML text.
  // The returned pointer's deleter calls the plugin's own destroy. Throws kivi::Error naming
  // the known plugins of that kind if `name` is unknown, or with the plugin's message.
  template <class Interface>
  std::shared_ptr<Interface> create(const std::string& name,
                                    const std::string& options_toml = "") const {
    const Entry& entry = find(Interface::kPluginKind, name);
    void* object = create_raw(entry, options_toml);
    auto destroy = entry.factory->destroy;
    return std::shared_ptr<Interface>(static_cast<Interface*>(object),
                                      [destroy](Interface* p) { destroy(static_cast<void*>(p)); });
  }

 private:
  struct Entry {
    PluginInfo info;
    const kivi_factory_v1* factory = nullptr;
  };
  const Entry& find(const std::string& kind, const std::string& name) const;
  void* create_raw(const Entry& entry, const std::string& options_toml) const;
  bool refuse(const std::string& file, const std::string& reason);

  std::map<std::pair<std::string, std::string>, Entry> entries_;
  std::vector<RefusedPlugin> refused_;
};

}  // namespace kivi
