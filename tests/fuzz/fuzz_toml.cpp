// run.toml text into ConfigTable (the reader every config section goes through): parse, then
// typed reads of every key as each type (the error paths print the offending value), sub-tables
// to a few levels, and the unknown-key check. kivi::Error is the expected failure.
#include <cstddef>
#include <cstdint>
#include <string>

#include "kivi/config/config_table.h"
#include "kivi/util/error.h"

namespace {

void read_all(kivi::ConfigTable table, const toml::table& raw, int depth) {
  for (const auto& [key, node] : raw) {
    const std::string name(key.str());
    (void)kivi::describe_toml(node);
    (void)table.where(name);
    try {
      (void)table.get_string(name, "");
    } catch (const kivi::Error&) {
    }
    try {
      (void)table.get_int_in(name, 0, -5, 1 << 20);
    } catch (const kivi::Error&) {
    }
    try {
      (void)table.get_double(name, 0);
    } catch (const kivi::Error&) {
    }
    try {
      (void)table.get_bool(name, false);
    } catch (const kivi::Error&) {
    }
    try {
      (void)table.get_string_list(name, {});
    } catch (const kivi::Error&) {
    }
    try {
      (void)table.get_choice(name, "a", {"a", "b"});
    } catch (const kivi::Error&) {
    }
    if (depth < 4 && node.is_table()) {
      try {
        read_all(table.sub(name), *node.as_table(), depth + 1);
      } catch (const kivi::Error&) {
      }
    }
  }
  try {
    table.finish();
  } catch (const kivi::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const toml::table root = kivi::ConfigTable::parse_text(text, "fuzz/run.toml");
    read_all(kivi::ConfigTable(root, "fuzz/run.toml"), root, 0);
  } catch (const kivi::Error&) {
  }
  return 0;
}
