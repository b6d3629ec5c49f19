#include "kivi/text/replacer.h"

#include "kivi/text/json_fields.h"
#include "kivi/util/error.h"

namespace kivi::text {

Replacer::Replacer(const nlohmann::json& spec, const std::string& where)
    : content_(json_string(spec, "content", where)) {
  const auto it = spec.find("pattern");
  if (it == spec.end() || !it->is_object())
    throw Error(where + ".pattern: expected {\"String\": ...} or {\"Regex\": ...}");
  if (it->contains("String") && (*it)["String"].is_string()) {
    literal_ = (*it)["String"].get<std::string>();
    if (literal_.empty()) throw Error(where + ".pattern.String: must not be empty");
  } else if (it->contains("Regex") && (*it)["Regex"].is_string()) {
    regex_ = std::make_unique<Regex>((*it)["Regex"].get<std::string>(), where + ".pattern.Regex");
  } else {
    throw Error(where + ".pattern: expected {\"String\": ...} or {\"Regex\": ...}, got " +
                it->dump());
  }
}

std::string Replacer::apply(std::string_view text) const {
  std::string out;
  out.reserve(text.size());
  std::size_t copied = 0;
  if (regex_) {
    regex_->for_each_match(text, [&](std::size_t start, std::size_t end) {
      out.append(text.substr(copied, start - copied));
      out += content_;
      copied = end;
    });
  } else {
    for (std::size_t hit = text.find(literal_); hit != std::string_view::npos;
         hit = text.find(literal_, copied)) {
      out.append(text.substr(copied, hit - copied));
      out += content_;
      copied = hit + literal_.size();
    }
  }
  out.append(text.substr(copied));
  return out;
}

}  // namespace kivi::text
