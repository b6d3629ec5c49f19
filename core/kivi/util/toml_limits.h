// A nesting bound for TOML text read from files others wrote (run.toml). toml++ bounds arrays
// and inline tables (256 levels) but not dotted keys: `a.a.a...= 1` or `[a.a.a...]` with
// 100,000 parts nests as many tables, and destroying them overflows the stack. Header-only.
#pragma once

#include <cctype>
#include <cstddef>
#include <string>
#include <string_view>

#include "kivi/util/error.h"

namespace kivi {

inline constexpr int kMaxTomlKeyParts = 64;

// Throws kivi::Error("source:line: ...") when a dotted key has more than `max_parts` parts. A
// scan outside strings and comments; it accepts what it does not understand (toml++ reports
// malformed TOML).
inline void check_toml_key_depth(std::string_view text, const std::string& source,
                                 int max_parts = kMaxTomlKeyParts) {
  int dots = 0;
  int line = 1;
  auto skip_until = [&](std::size_t& i, std::string_view end, bool escapes) {
    for (i += 1; i < text.size(); ++i) {
      if (text[i] == '\n') ++line;
      if (escapes && text[i] == '\\') {
        ++i;
        if (i < text.size() && text[i] == '\n') ++line;
        continue;
      }
      if (text.substr(i, end.size()) == end) {
        i += end.size() - 1;
        return;
      }
    }
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '"' || c == '\'') {
      const std::string_view triple = text.substr(i, 3);
      if (triple == "\"\"\"" || triple == "'''") {
        i += 2;
        skip_until(i, triple, c == '"');
        dots = 0;
      } else {
        skip_until(i, std::string_view(&text[i], 1), c == '"');  // a quoted key part
      }
    } else if (c == '#') {
      while (i + 1 < text.size() && text[i + 1] != '\n') ++i;
    } else if (c == '.') {
      if (++dots >= max_parts)
        throw Error(source + ":" + std::to_string(line) + ": a dotted key of more than " +
                    std::to_string(max_parts) +
                    " parts (tables nested that deep are refused; a real config nests a few)");
    } else if (c == '\n') {
      ++line;
      dots = 0;
    } else if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == ' ' ||
                 c == '\t')) {
      dots = 0;
    }
  }
}

}  // namespace kivi
