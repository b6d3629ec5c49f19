// Pre-tokenizers of tokenizer.json ("pre_tokenizer"): split normalized text into the words
// that the model tokenizes independently, possibly rewriting them (byte-level, metaspace).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

namespace kivi::text {

// Receives one piece; `at_start` is true when the piece begins at the start of the input
// (Metaspace's prepend_scheme "first" needs it). Pieces are never empty.
using PieceSink = std::function<void(std::string_view piece, bool at_start)>;

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void split(std::string_view text, bool at_start, const PieceSink& sink) const = 0;
};

// Builds the pre-tokenizer that `spec` describes; null for a JSON null. Supported: Split,
// ByteLevel, Metaspace, Sequence; anything else is a kivi::Error naming `where`.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& spec,
                                                 const std::string& where);

}  // namespace kivi::text
