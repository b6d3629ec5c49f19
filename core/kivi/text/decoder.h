// Decoders of tokenizer.json ("decoder"): turn token strings back into text. Each step maps the
// list of token strings to a new list, as the reference's decode_chain does; the decoded text
// is their concatenation.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace kivi::text {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
  // True for a lone ByteLevel decoder, which the tokenizer runs on precomputed bytes instead.
  virtual bool is_byte_level() const { return false; }
};

// Supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence; null gives
// nullptr (tokens are then joined with spaces). Anything else is a kivi::Error naming `where`.
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& spec, const std::string& where);

}  // namespace kivi::text
