#include "kivi/text/stream_decoder.h"

#include "kivi/text/utf8.h"

namespace kivi::text {

namespace {

constexpr std::string_view kReplacementUtf8 = "\xEF\xBF\xBD";

// Whether `text` may still change when more ids arrive: it ends in an unfinished UTF-8
// sequence, or in U+FFFD, which byte-level and byte-fallback decoders make of unfinished
// bytes (the reference's DecodeStream waits on it too).
bool ends_unfinished(std::string_view text) {
  return utf8::incomplete_tail_length(text) > 0 || text.ends_with(kReplacementUtf8);
}

}  // namespace

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens), prefix_ids_(0) {}

void StreamDecoder::reset() {
  window_.clear();
  prefix_.clear();
  prefix_ids_ = 0;
}

std::string StreamDecoder::step(int32_t id) {
  window_.push_back(id);
  const std::string text = tokenizer_.decode(window_, skip_special_tokens_);
  if (text.size() <= prefix_.size() || ends_unfinished(text) || !text.starts_with(prefix_))
    return {};
  std::string fresh = text.substr(prefix_.size());
  // Keep only the ids that follow the previous prefix as context for the next step.
  window_.erase(window_.begin(), window_.begin() + static_cast<std::ptrdiff_t>(prefix_ids_));
  prefix_ids_ = window_.size();
  prefix_ = tokenizer_.decode(window_, skip_special_tokens_);
  return fresh;
}

std::string StreamDecoder::flush() {
  const std::string text = tokenizer_.decode(window_, skip_special_tokens_);
  std::string rest = text.size() > prefix_.size() && text.starts_with(prefix_)
                         ? text.substr(prefix_.size())
                         : std::string();
  reset();
  return rest;
}

}  // namespace kivi::text
