// Arbitrary text as run.toml, read into the host's config types as `kivi-host --config` does:
// the bounded TOML read, every section's keys, types and ranges, relative paths, output paths
// (checked, never created), the unknown-key checks; a last line starting with "!" is also
// applied as a --set override. kivi::Error is the expected failure; anything else escaping (a
// toml++ exception, std::out_of_range, ...) or a sanitizer report is a finding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "host_config.h"
#include "kivi/config/config_table.h"
#include "kivi/util/error.h"

// The instrumented build compiles host_config.cpp without modes.cpp (whose table links every
// mode's code, the whole engine); this list stands in for that table's names there. The
// replay test links the real table and checks that the list still matches it.
const std::vector<std::string> kModeNames = {"bench",    "chat",    "check",      "compare",
                                             "generate", "memory",  "perplexity", "plugins",
                                             "serve",    "tokenize"};
#ifdef KIVI_FUZZ_STANDALONE
const std::vector<std::string>& kivi::host::known_modes() {
  return kModeNames;
}
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool modes_match = kivi::host::known_modes() == kModeNames;
  if (!modes_match) __builtin_trap();  // update kModeNames
  std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> overrides;
  if (const size_t line = text.rfind('\n');
      line != std::string::npos && line + 1 < text.size() && text[line + 1] == '!') {
    overrides.push_back(text.substr(line + 2));
    text.resize(line);
  }
  try {
    toml::table root = kivi::ConfigTable::parse_text(text, "fuzz/run.toml");
    kivi::host::apply_overrides(root, overrides);
    (void)kivi::host::parse_host_config(root, "fuzz/run.toml");
  } catch (const kivi::Error&) {
  }
  return 0;
}
