#include "kivi/generate/text_stops.h"

#include <algorithm>

namespace kivi::generate {

std::pair<std::string, bool> TextStops::add(const std::string& piece) {
  size_t longest = 0;
  for (const std::string& s : stops_) longest = std::max(longest, s.size());
  // A new match must end inside `piece`, so it starts at most longest - 1 bytes before it.
  const size_t from = text_.size() >= longest ? text_.size() - longest + 1 : 0;
  text_ += piece;
  size_t cut = std::string::npos;
  for (const std::string& s : stops_) cut = std::min(cut, text_.find(s, from));
  if (cut != std::string::npos) {
    std::string out = cut > emitted_ ? text_.substr(emitted_, cut - emitted_) : "";
    emitted_ = text_.size();
    return {out, true};
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stops_)
    for (size_t n = std::min(s.size() - 1, text_.size()); n > hold; --n)
      if (text_.compare(text_.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
  const size_t safe = std::max(emitted_, text_.size() - hold);
  std::string out = text_.substr(emitted_, safe - emitted_);
  emitted_ = safe;
  return {out, false};
}

std::string TextStops::finish(const std::string& tail) {
  text_ += tail;
  std::string out = text_.substr(std::min(emitted_, text_.size()));
  emitted_ = text_.size();
  return out;
}

}  // namespace kivi::generate
