// Stop strings over streamed text: text that could still be the start of a stop string is held
// back, so a streaming caller never prints what a stop string then cuts off.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace kivi::generate {

class TextStops {
 public:
  explicit TextStops(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Adds decoded text; returns the text now safe to emit and whether a stop string appeared
  // (then the emitted text ends just before it, and nothing more comes).
  std::pair<std::string, bool> add(const std::string& piece);
  // End of the sequence: everything held back plus `tail`.
  std::string finish(const std::string& tail);

 private:
  std::vector<std::string> stops_;
  std::string text_;    // all text so far
  size_t emitted_ = 0;  // bytes of text_ already returned
};

}  // namespace kivi::generate
