// What distinguishes one Llama-like family from another, as data: the checkpoint's weight
// names and the switches of the one shared forward pass (decoder_lm.h). A family plugin fills
// this in from the config; adding a Llama-like family is a new table, not new layers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kivi {

struct DecoderSpec {
  // Weight names; "{layer}" in a per-layer name is replaced by the layer index.
  std::string embed_tokens = "model.embed_tokens.weight";
  std::string final_norm = "model.norm.weight";
  std::string lm_head = "lm_head.weight";  // unused when tie_word_embeddings
  std::string input_norm = "model.layers.{layer}.input_layernorm.weight";
  std::string post_attention_norm = "model.layers.{layer}.post_attention_layernorm.weight";
  std::string q_proj = "model.layers.{layer}.self_attn.q_proj";  // + ".weight" / ".bias"
  std::string k_proj = "model.layers.{layer}.self_attn.k_proj";
  std::string v_proj = "model.layers.{layer}.self_attn.v_proj";
  std::string o_proj = "model.layers.{layer}.self_attn.o_proj";
  std::string gate_proj = "model.layers.{layer}.mlp.gate_proj";
  std::string up_proj = "model.layers.{layer}.mlp.up_proj";
  std::string down_proj = "model.layers.{layer}.mlp.down_proj";
  // Per-layer options a family declares. q_norm / k_norm: weights [head_dim] of an RMSNorm over
  // each head of q and of k, applied before rotary (Qwen3); "" = none.
  std::string q_norm;
  std::string k_norm;

  bool qkv_bias = false;  // Qwen2: always; Llama: attention_bias
  bool o_bias = false;    // Llama: attention_bias; Qwen2: never
  bool mlp_bias = false;  // Llama: mlp_bias
  bool tie_word_embeddings = false;
  // Per layer: 0 = full attention, > 0 = sliding window of that many positions. Empty = all full.
  std::vector<int64_t> sliding_window;
};

// `pattern` with "{layer}" replaced by `layer`.
std::string layer_name(const std::string& pattern, int64_t layer);

}  // namespace kivi
