// A compiled PCRE2 pattern (UTF + Unicode properties, JIT-compiled) used by the Split
// pre-tokenizer, the Replace normalizer/decoder and the added-token word checks.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace kivi::text {

class Regex {
 public:
  // Throws kivi::Error naming `where` and the pattern when it does not compile.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls on_match(start, end) for every non-overlapping match in `text`, left to right.
  // `text` must be valid UTF-8. Empty matches are reported and the search moves one
  // character on, as Rust's and Oniguruma's find-iterators do.
  void for_each_match(std::string_view text,
                      const std::function<void(std::size_t, std::size_t)>& on_match) const;

  // Whether the pattern matches anywhere in `text`.
  bool search(std::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Impl;
  std::string pattern_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kivi::text
