// Post-processors of tokenizer.json ("post_processor"). For a single sequence every supported
// kind reduces to fixed ids around the text's ids (e.g. BOS in front), computed once at load.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace kivi::text {

struct SpecialTokensAround {
  std::vector<int32_t> prefix;
  std::vector<int32_t> suffix;
};

// Supported: TemplateProcessing, ByteLevel (offsets only), RobertaProcessing, BertProcessing,
// Sequence; null gives nothing around. Anything else is a kivi::Error naming `where`.
SpecialTokensAround make_post_processor(const nlohmann::json& spec, const std::string& where);

}  // namespace kivi::text
