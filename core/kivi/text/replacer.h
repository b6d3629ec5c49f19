// The {"pattern": {"String"|"Regex": ...}, "content": ...} rewrite shared by the Replace
// normalizer and the Replace decoder.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "kivi/text/regex.h"

namespace kivi::text {

class Replacer {
 public:
  Replacer(const nlohmann::json& spec, const std::string& where);
  // `text` with every non-overlapping match replaced by the content.
  std::string apply(std::string_view text) const;

 private:
  std::string literal_;           // set for a String pattern
  std::unique_ptr<Regex> regex_;  // set for a Regex pattern
  std::string content_;
};

}  // namespace kivi::text
