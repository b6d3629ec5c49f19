// ModelConfig: what a Hugging Face config.json (and generation_config.json, when present) says
// about a Llama-like decoder: the fields every family shares, read and checked; other fields are
// the family's to read (ModelConfig::fields(), e.g. Qwen2's sliding window). A common field of
// the wrong type or an unsupported value (a rope type, an activation) is a kivi::Error naming
// the file and field.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <c10/core/ScalarType.h>

namespace kivi {

// Rotary position embedding parameters: `rope_scaling` (older configs, as real checkpoints
// carry it) or `rope_parameters` (transformers >= 5), plus `rope_theta`.
struct RopeConfig {
  std::string type = "default";  // default | linear | dynamic | llama3
  double theta = 10000.0;
  double factor = 1.0;                           // linear, dynamic, llama3
  double low_freq_factor = 1.0;                  // llama3
  double high_freq_factor = 4.0;                 // llama3
  int64_t original_max_position_embeddings = 0;  // llama3 (defaults to max_position_embeddings)
  double partial_rotary_factor = 1.0;            // fraction of head_dim that is rotated
};

// Typed access to a config's fields by name, for what a family reads beyond the common ones.
// Messages name the file and the field: `<source>: field "sliding_window" is "x", expected ...`.
class ConfigFields {
 public:
  ConfigFields(const std::string& json_text, std::string source);
  bool has(const std::string& key) const;
  int64_t integer(const std::string& key, std::optional<int64_t> fallback = std::nullopt) const;
  double number(const std::string& key, double fallback) const;
  bool boolean(const std::string& key, bool fallback) const;
  std::string string(const std::string& key, const std::string& fallback) const;
  std::vector<std::string> strings(const std::string& key) const;  // empty when absent
  [[noreturn]] void fail(const std::string& key, const std::string& expected) const;

 private:
  std::shared_ptr<const void> json_;  // the parsed object (nlohmann::json, kept out of this header)
  std::string source_;
};

struct ModelConfig {
  std::filesystem::path folder;            // where config.json was read ("" when parsed from text)
  std::string source;                      // config.json path, for messages
  std::vector<std::string> architectures;  // e.g. {"LlamaForCausalLM"}
  std::string model_type;                  // e.g. "llama", "qwen2"

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads (no GQA)
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  std::string hidden_act = "silu";
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // Llama: bias on q/k/v/o (Qwen2 always has q/k/v bias)
  bool mlp_bias = false;
  RopeConfig rope;

  // The config as read (config.json's text, or the JSON a GGUF file's metadata becomes), for
  // fields only a family knows: fields() reads them.
  std::string raw_json = "{}";
  ConfigFields fields() const { return ConfigFields(raw_json, source); }

  std::optional<at::ScalarType> torch_dtype;  // `torch_dtype` or `dtype`, when given
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // a number or a list in the file
  std::optional<int64_t> pad_token_id;

  // generation_config.json defaults, when the file is present (it overrides bos/eos too).
  struct Generation {
    bool present = false;
    bool do_sample = false;
    double temperature = 1.0;
    double top_p = 1.0;
    int64_t top_k = 50;
    int64_t max_length = 0;      // 0 = not given
    int64_t max_new_tokens = 0;  // 0 = not given
    double repetition_penalty = 1.0;
  } generation;
};

// Reads <folder>/config.json and, when present, <folder>/generation_config.json.
ModelConfig load_model_config(const std::filesystem::path& folder);

// Parses config.json text; `source` names it in messages. Checks that the shapes agree
// (heads divide, kv heads divide heads, ...).
ModelConfig parse_model_config(const std::string& json_text, const std::string& source);

// Adds generation_config.json text to `config`.
void apply_generation_config(ModelConfig& config, const std::string& json_text,
                             const std::string& source);

// The most positions a sequence may use: max_position_embeddings, or 0 (no limit) for dynamic
// NTK rope, which grows its base with the sequence precisely to go past it (transformers
// allows it too). Other rope types were not trained past max_position_embeddings.
int64_t position_limit(const ModelConfig& config);

// "float32" | "float16" | "bfloat16" (also "fp32", "half", ...) to a dtype; nullopt otherwise.
std::optional<at::ScalarType> parse_dtype_name(const std::string& name);

}  // namespace kivi
