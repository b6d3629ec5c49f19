#include "kivi/model/decoder_spec.h"

namespace kivi {

std::string layer_name(const std::string& pattern, int64_t layer) {
  static const std::string key = "{layer}";
  std::string out = pattern;
  const auto at = out.find(key);
  if (at != std::string::npos) out.replace(at, key.size(), std::to_string(layer));
  return out;
}

}  // namespace kivi
