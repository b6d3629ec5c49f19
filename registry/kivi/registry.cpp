#include "kivi/registry.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <sstream>

#include <dlfcn.h>

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>

#include "kivi/plugin/fingerprint.h"

namespace kivi {
namespace fs = std::filesystem;
namespace {

// Libraries are never unloaded: objects they made (and their vtables) may live until exit.
std::deque<boost::dll::shared_library>& loaded_libraries() {
  static auto* libraries = new std::deque<boost::dll::shared_library>();
  return *libraries;
}
std::mutex& load_mutex() {
  static std::mutex m;
  return m;
}

// dlopen of a file that is not ELF fails with errno-style messages ("Bad file descriptor") that
// do not say what is wrong; the first bytes do.
std::string not_elf_reason(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return "cannot be read";
  char magic[4] = {};
  in.read(magic, sizeof magic);
  if (in.gcount() == 4 && std::memcmp(magic,
                                      "\x7f"
                                      "ELF",
                                      4) == 0)
    return "";
  return "not a shared library: the file does not start with the ELF magic bytes (is it text, or a "
         "linker script?)";
}

// The dynamic loader's own reason (e.g. "undefined symbol: x"), which Boost.DLL's error code
// does not carry; `fallback` when the loader gives none.
std::string loader_message(const fs::path& file, const std::string& fallback) {
  dlerror();  // clears an earlier message
  if (void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL)) {
    dlclose(handle);
    return fallback;
  }
  const char* message = dlerror();
  return message ? message : fallback;
}

bool looks_like_shared_library(const fs::path& file) {
  const std::string name = file.filename().string();
  return name.size() > 3 && (name.ends_with(".so") || name.find(".so.") != std::string::npos);
}

bool is_known_kind(const char* kind) {
  static const std::array<const char*, 3> kinds = {"kv_cache", "attention", "model_family"};
  return std::any_of(kinds.begin(), kinds.end(),
                     [&](const char* k) { return kind && std::strcmp(kind, k) == 0; });
}

}  // namespace

fs::path Registry::default_plugin_dir() {
  const fs::path exe = boost::dll::program_location();
  return (exe.parent_path() / ".." / "lib" / "kivi" / "plugins").lexically_normal();
}

void Registry::load_dir(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error("plugin folder " + dir.string() + ": not found or not a folder");
  std::vector<fs::path> files;
  for (const auto& item : fs::directory_iterator(dir))
    if (item.is_regular_file() && looks_like_shared_library(item.path()))
      files.push_back(item.path());
  std::sort(files.begin(), files.end());
  for (const auto& file : files) load_file(file);
}

bool Registry::refuse(const std::string& file, const std::string& reason) {
  refused_.push_back({file, reason});
  return false;
}

bool Registry::load_file(const fs::path& file) {
  std::lock_guard<std::mutex> lock(load_mutex());
  if (const std::string reason = not_elf_reason(file); !reason.empty())
    return refuse(file.string(), reason);
  boost::dll::shared_library library;
  boost::dll::fs::error_code ec;
  // rtld_now: every symbol resolves at load, so a library built against another core is refused
  // here with the loader's message rather than failing at its first call. rtld_local: plugins
  // do not see each other's symbols; they share the core through libkivi_core.
  library.load(file, ec, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  if (ec)
    return refuse(file.string(),
                  "not a loadable shared library: " + loader_message(file, ec.message()));
  if (!library.has(KIVI_PLUGIN_ENTRY_SYMBOL))
    return refuse(file.string(), std::string("not a kivi plugin: it does not export '") +
                                     KIVI_PLUGIN_ENTRY_SYMBOL + "'");
  auto entry = library.get<const kivi_plugin_v1*()>(KIVI_PLUGIN_ENTRY_SYMBOL);
  const kivi_plugin_v1* descriptor = entry();
  const size_t before = entries_.size();
  if (!add_static(descriptor, file.string())) return false;
  if (entries_.size() > before) loaded_libraries().push_back(std::move(library));
  return true;
}

bool Registry::add_static(const kivi_plugin_v1* d, const std::string& origin) {
  if (!d) return refuse(origin, "its entry point returned no descriptor");
  if (d->abi_version != KIVI_PLUGIN_ABI_VERSION)
    return refuse(origin, "plugin ABI version " + std::to_string(d->abi_version) +
                              ", but this kivi speaks ABI version " +
                              std::to_string(KIVI_PLUGIN_ABI_VERSION) + "; rebuild the plugin");
  if (d->struct_size < sizeof(kivi_plugin_v1))
    return refuse(origin, "descriptor too small (" + std::to_string(d->struct_size) + " bytes)");
  const std::string theirs = d->fingerprint ? d->fingerprint : "(none)";
  if (theirs != build_fingerprint())
    return refuse(origin,
                  "build fingerprint differs; rebuild the plugin against this kivi.\n"
                  "    plugin: " +
                      theirs + "\n    kivi:   " + build_fingerprint());
  // Check every factory before registering any, so a broken library is taken not at all. A
  // factory whose (kind, name) is already registered is skipped alone: the library's others
  // still register, and the refusal names the file whose factory stays in use.
  std::vector<Entry> pending;
  std::vector<std::string> duplicates;
  for (uint32_t i = 0; i < d->factory_count; ++i) {
    const kivi_factory_v1& f = d->factories[i];
    const std::string label = std::string(f.kind ? f.kind : "?") + "/" + (f.name ? f.name : "?");
    if (f.struct_size < sizeof(kivi_factory_v1) || !f.create || !f.destroy || !f.name)
      return refuse(origin, "factory " + label + " is incomplete");
    if (!is_known_kind(f.kind))
      return refuse(origin, "factory " + label +
                                " has unknown kind; expected kv_cache, attention or model_family");
    const auto key = std::make_pair(std::string(f.kind), std::string(f.name));
    for (const Entry& p : pending)
      if (p.info.kind == key.first && p.info.name == key.second)
        return refuse(origin, "duplicate plugin " + label + " within the library");
    if (auto it = entries_.find(key); it != entries_.end()) {
      duplicates.push_back("duplicate plugin " + label + " skipped: " + it->second.info.file +
                           " provides it and was loaded first; that one is used");
      continue;
    }
    pending.push_back(
        {PluginInfo{f.kind, f.name, f.summary ? f.summary : "", d->library ? d->library : "?",
                    d->version ? d->version : "?", origin},
         &f});
  }
  for (Entry& e : pending) {
    auto key = std::make_pair(e.info.kind, e.info.name);
    entries_.emplace(std::move(key), std::move(e));
  }
  for (const std::string& reason : duplicates) refuse(origin, reason);
  return !pending.empty() || duplicates.empty();
}

std::vector<PluginInfo> Registry::list() const {
  std::vector<PluginInfo> out;
  for (const auto& [key, entry] : entries_) out.push_back(entry.info);
  return out;
}

bool Registry::contains(const std::string& kind, const std::string& name) const {
  return entries_.count({kind, name}) > 0;
}

std::vector<std::string> Registry::names(const std::string& kind) const {
  std::vector<std::string> out;
  for (const auto& [key, entry] : entries_)
    if (key.first == kind) out.push_back(key.second);
  return out;
}

const Registry::Entry& Registry::find(const std::string& kind, const std::string& name) const {
  auto it = entries_.find({kind, name});
  if (it != entries_.end()) return it->second;
  std::ostringstream msg;
  msg << "no " << kind << " plugin named \"" << name << "\"; available: ";
  const auto known = names(kind);
  if (known.empty()) msg << "(none loaded; check the plugin folders)";
  for (size_t i = 0; i < known.size(); ++i) msg << (i ? ", " : "") << known[i];
  throw Error(msg.str());
}

void* Registry::create_raw(const Entry& entry, const std::string& options_toml) const {
  std::array<char, 4096> error{};
  void* object = nullptr;
  const int rc = entry.factory->create(options_toml.c_str(), &object, error.data(), error.size());
  if (rc != 0 || !object) {
    throw Error(entry.info.kind + " plugin \"" + entry.info.name + "\" (" + entry.info.file +
                "): " + (error[0] ? error.data() : "create failed without a message"));
  }
  return object;
}

}  // namespace kivi
