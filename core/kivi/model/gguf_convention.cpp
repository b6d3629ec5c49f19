#include "kivi/model/gguf_convention.h"

#include <regex>
#include <utility>

namespace kivi {

std::optional<std::string> gguf_tensor_name(const std::string& hf) {
  static const std::pair<const char*, const char*> global[] = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"}};
  for (const auto& [from, to] : global)
    if (hf == from) return std::string(to);
  static const std::pair<const char*, const char*> per_layer[] = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"self_attn.q_proj.", "attn_q."},
      {"self_attn.k_proj.", "attn_k."},
      {"self_attn.v_proj.", "attn_v."},
      {"self_attn.o_proj.", "attn_output."},
      {"mlp.gate_proj.", "ffn_gate."},
      {"mlp.up_proj.", "ffn_up."},
      {"mlp.down_proj.", "ffn_down."}};
  static const std::regex layer(R"(model\.layers\.(\d+)\.(.+))");
  std::smatch m;
  if (!std::regex_match(hf, m, layer)) return std::nullopt;
  const std::string rest = m[2];
  for (const auto& [from, to] : per_layer) {
    const std::string f = from;
    if (rest.compare(0, f.size(), f) == 0 && (f.back() != '.' || rest.size() > f.size()))
      return "blk." + m[1].str() + "." + to + rest.substr(f.size());
  }
  return std::nullopt;
}

}  // namespace kivi
