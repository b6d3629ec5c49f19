// Normalizers of tokenizer.json ("normalizer"): rewrite text before pre-tokenization.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace kivi::text {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites `text` (valid UTF-8) in place.
  virtual void normalize(std::string& text) const = 0;
};

// Builds the normalizer that `spec` describes; null for a JSON null. `where` names the file
// and field for error messages. Supported: NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace,
// Strip, Sequence; anything else is a kivi::Error.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& spec, const std::string& where);

}  // namespace kivi::text
