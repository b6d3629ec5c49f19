// Streaming detokenization: feed generated ids one at a time and get the text that became
// printable. Text is held back while it would end in an incomplete UTF-8 sequence (or in the
// U+FFFD a decoder makes of one), and the pieces concatenate to decode(all ids).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kivi/text/tokenizer.h"

namespace kivi::text {

class StreamDecoder {
 public:
  // `tokenizer` must outlive the decoder.
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = true);

  // The text that `id` completes; often empty (e.g. the first bytes of a character).
  std::string step(int32_t id);
  // The text still held back (call at the end of generation); the decoder is then reset.
  std::string flush();
  void reset();

 private:
  // Decodes the ids kept since `window_start_` and returns the new text after the prefix.
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  // The ids not yet fully emitted, preceded by one already-emitted id that gives context
  // (decoders such as Llama-2's strip a leading space from the first token only).
  std::vector<int32_t> window_;
  std::string prefix_;      // decode of the window's ids that were already emitted
  std::size_t prefix_ids_;  // how many of window_ that is
};

}  // namespace kivi::text
