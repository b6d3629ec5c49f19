// What a model family says about its GGUF files (ModelFamily::gguf): the Hugging Face
// architecture and model_type its metadata becomes, how its tensors are named, and what the
// converter did to them. The core's GGUF loader (gguf_weights.h) reads through it and knows
// no architecture itself.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace kivi {

// llama.cpp's tensor names, which its converter gives every Llama-like architecture:
// "model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight"; nullopt for a name with
// no GGUF counterpart. A family may use it as is or extend it (e.g. q_norm -> attn_q_norm).
std::optional<std::string> gguf_tensor_name(const std::string& hf_name);

struct GgufConvention {
  std::string architecture;     // general.architecture, e.g. "llama"; "<architecture>.*" keys
  std::string hf_architecture;  // config.json's architectures[0], e.g. "LlamaForCausalLM"
  std::string model_type;       // config.json's model_type, e.g. "llama"
  // attention_bias in the config = the file has blk.0.attn_q.bias (Llama); else false.
  bool attention_bias_from_q_bias = false;
  // llama.cpp's converter permuted the rows of q/k (ggml rotates adjacent pairs where Hugging
  // Face rotates halves); the loader permutes them back.
  bool unpermute_qk = false;
  // Hugging Face tensor name -> GGUF tensor name.
  std::function<std::optional<std::string>(const std::string&)> tensor_name = gguf_tensor_name;
};

}  // namespace kivi
