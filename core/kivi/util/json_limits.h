// Nesting bounds for JSON read from files others wrote (config.json, safetensors headers,
// tokenizer.json, tokenizer_config.json). nlohmann's parser and destructor do not recurse, but
// dump() (error messages print the offending value) and kivi's own readers do: past
// kMaxJsonDepth levels of arrays and objects the input is refused with an error naming the
// file, before anything walks it. Header-only: kivi_text (no libtorch) uses it too.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "kivi/util/error.h"

namespace kivi {

inline constexpr int kMaxJsonDepth = 512;

namespace json_limits_detail {
[[noreturn]] inline void too_deep(const std::string& source, int max_depth,
                                  const std::string& where) {
  throw Error(source + ": JSON nested more than " + std::to_string(max_depth) +
              " levels deep (arrays and objects inside each other" + where +
              "); a real file nests a few levels");
}
}  // namespace json_limits_detail

// Throws kivi::Error naming `source` and the byte offset when `text` opens more than
// `max_depth` arrays/objects inside each other. A scan of the text, outside strings; it
// accepts what it does not understand (the parser reports malformed JSON).
inline void check_json_depth(std::string_view text, const std::string& source,
                             int max_depth = kMaxJsonDepth) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth)
        json_limits_detail::too_deep(source, max_depth, ", at byte " + std::to_string(i));
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
}

// The same bound for a value parsed elsewhere (no recursion: an explicit stack).
inline void check_json_depth(const nlohmann::json& value, const std::string& source,
                             int max_depth = kMaxJsonDepth) {
  std::vector<std::pair<const nlohmann::json*, int>> stack{{&value, 1}};
  while (!stack.empty()) {
    const auto [node, depth] = stack.back();
    stack.pop_back();
    if (!node->is_structured()) continue;
    if (depth > max_depth) json_limits_detail::too_deep(source, max_depth, "");
    for (const auto& child : *node)
      if (child.is_structured()) stack.emplace_back(&child, depth + 1);
  }
}

// nlohmann::json::parse after check_json_depth. Malformed JSON still throws nlohmann's
// exceptions (callers add the file name as before).
inline nlohmann::json parse_json_bounded(std::string_view text, const std::string& source,
                                         int max_depth = kMaxJsonDepth) {
  check_json_depth(text, source, max_depth);
  return nlohmann::json::parse(text.begin(), text.end());
}

}  // namespace kivi
