// Strict reading of TOML tables: every key read is remembered, and finish() rejects the keys
// nobody asked for, so a typo in run.toml or in a plugin's options is an error, not a silently
// ignored setting. Errors carry "file:line:column" where toml++ knows the source position, and
// always the dotted key path, the value found and what was expected.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <toml++/toml.h>

namespace kivi {

class ConfigTable {
 public:
  // `table` must outlive this object. `path` is the dotted location of the table ("" for the
  // document root, "cache", "model", ...). `source` names the file for messages.
  ConfigTable(const toml::table& table, std::string source, std::string path = "");

  // Parses TOML text (e.g. a plugin's options). Throws kivi::Error with file:line:column.
  static toml::table parse_text(const std::string& text, const std::string& source);
  static toml::table parse_file(const std::string& file);

  bool has(const std::string& key) const;

  // Typed getters: a missing key gives the default; a key of the wrong type is an error.
  std::string get_string(const std::string& key, const std::string& fallback);
  std::string require_string(const std::string& key);
  int64_t get_int(const std::string& key, int64_t fallback);
  double get_double(const std::string& key, double fallback);  // accepts integers too
  bool get_bool(const std::string& key, bool fallback);
  std::vector<std::string> get_string_list(const std::string& key,
                                           const std::vector<std::string>& fallback);
  // A string that must be one of `allowed`.
  std::string get_choice(const std::string& key, const std::string& fallback,
                         const std::vector<std::string>& allowed);
  // An integer that must be one of `allowed`.
  int64_t get_int_choice(const std::string& key, int64_t fallback,
                         const std::vector<int64_t>& allowed);
  // An integer within [lo, hi].
  int64_t get_int_in(const std::string& key, int64_t fallback, int64_t lo, int64_t hi);

  // A sub-table (empty if absent); marks the key as used.
  ConfigTable sub(const std::string& key);
  const toml::table* raw_table(const std::string& key) const;

  // Marks a key as read without reading it (e.g. handed on to a plugin).
  void mark_used(const std::string& key) { used_.insert(key); }

  // Throws on the first key that was never read, naming it and the keys that are allowed.
  void finish() const;

  // "file:line:column: path.key" for messages about `key` (or about the table if key is "").
  std::string where(const std::string& key) const;
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

  const std::string& path() const { return path_; }
  const std::string& source() const { return source_; }

 private:
  const toml::node* lookup(const std::string& key);
  std::string key_path(const std::string& key) const;

  const toml::table* table_;
  std::string source_;
  std::string path_;
  std::set<std::string> used_;
};

// Renders a TOML node for messages (strings quoted, tables abbreviated).
std::string describe_toml(const toml::node& node);

}  // namespace kivi
