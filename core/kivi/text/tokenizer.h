// A tokenizer read from a Hugging Face tokenizer.json (optionally with its
// tokenizer_config.json): encode text to ids and decode ids to text exactly as the reference
// `tokenizers` library does for the files it supports (BPE models: byte-level such as Llama-3
// and Qwen2, SentencePiece-style such as Llama-2).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace kivi::text {

class Tokenizer {
 public:
  // Reads `tokenizer_json`; `tokenizer_config` (tokenizer_config.json) adds the added-token
  // flags of its added_tokens_decoder, the bos/eos tokens and the chat template (a
  // chat_template.jinja beside it takes precedence, as in transformers). Throws kivi::Error
  // naming the file and field for malformed or unsupported content.
  static Tokenizer from_file(const std::filesystem::path& tokenizer_json,
                             const std::optional<std::filesystem::path>& tokenizer_config = {});
  // The same from parsed JSON; `source` names it in error messages.
  static Tokenizer from_json(const nlohmann::json& tokenizer_json, const std::string& source);
  // The same with a tokenizer_config.json given as parsed JSON too (e.g. made from GGUF
  // metadata); no chat_template.jinja is looked for.
  static Tokenizer from_json(const nlohmann::json& tokenizer_json,
                             const nlohmann::json& tokenizer_config, const std::string& source);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Ill-formed UTF-8 in `text` is first replaced with U+FFFD per maximal ill-formed
  // subsequence (Python's errors="replace"). add_special_tokens adds what the post-processor
  // adds (e.g. BOS).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  // Unknown ids are skipped, as in the reference. skip_special_tokens drops added tokens
  // flagged special.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  // One past the largest id of the model vocabulary and the added tokens.
  std::size_t vocab_size() const;
  bool is_special(int32_t id) const;

  // From tokenizer_config.json's bos_token/eos_token; without a config, BOS is the token the
  // post-processor puts in front, if any.
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  // The token strings (empty when unknown), as chat templates need them.
  const std::string& bos_token() const;
  const std::string& eos_token() const;
  // The chat template text from the config (empty when there is none).
  const std::string& chat_template() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  void build_byte_level_table();
  // `jinja`: a chat_template.jinja that takes precedence over the config's template, if it exists.
  void apply_config(const nlohmann::json& config, const std::string& source,
                    const std::optional<std::filesystem::path>& jinja);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kivi::text
