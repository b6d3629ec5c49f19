#include "kivi/model/gguf_tokenizer.h"

#include <nlohmann/json.hpp>

#include "kivi/util/error.h"

namespace kivi {
namespace {
using nlohmann::json;

// llama.cpp's token types (llama_token_type).
enum : int64_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

json byte_level(bool add_prefix_space, bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", add_prefix_space},
          {"trim_offsets", false},
          {"use_regex", use_regex}};
}
json split(const char* regex) {
  return {{"type", "Split"},
          {"pattern", {{"Regex", regex}}},
          {"behavior", "Isolated"},
          {"invert", false}};
}

// The Hugging Face pre-tokenizer matching llama.cpp's pre-tokenizer type `pre` (its
// llm_tokenizer_bpe regex lists): the original model's tokenizer.json pre_tokenizer.
json pre_tokenizer(const std::string& pre, bool add_prefix_space, const std::string& where) {
  if (pre == "default" || pre == "gpt2" || pre == "gpt-2")
    return byte_level(add_prefix_space, true);
  if (pre == "smollm")  // \p{N} isolated (Digits, individual_digits), then the GPT-2 pattern
    return {{"type", "Sequence"},
            {"pretokenizers", {split("\\p{N}"), byte_level(add_prefix_space, true)}}};
  if (pre == "llama-bpe" || pre == "llama3")
    return {{"type", "Sequence"},
            {"pretokenizers",
             {split("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"),
              byte_level(false, false)}}};
  if (pre == "qwen2")
    return {{"type", "Sequence"},
            {"pretokenizers",
             {split("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"),
              byte_level(false, false)}}};
  throw Error(where + ": metadata \"tokenizer.ggml.pre\" is \"" + pre +
              "\", which kivi does not know (supported: default, gpt2, smollm, llama-bpe, qwen2)");
}

}  // namespace

GgufTokenizerFiles gguf_tokenizer_files(const GgufFile& file) {
  const std::string where = file.path().string();
  const auto model = file.get_string("tokenizer.ggml.model");
  check(model.has_value(),
        where + ": metadata \"tokenizer.ggml.model\" is missing (the file has no tokenizer)");
  check(*model == "gpt2",
        where + ": metadata \"tokenizer.ggml.model\" is \"" + *model +
            "\"; kivi reads only byte-level BPE (\"gpt2\") tokenizers from GGUF files");
  const auto* tokens = file.get_strings("tokenizer.ggml.tokens");
  const auto* merges = file.get_strings("tokenizer.ggml.merges");
  check(tokens != nullptr && !tokens->empty(),
        where + ": metadata \"tokenizer.ggml.tokens\" is missing or empty");
  check(merges != nullptr, where + ": metadata \"tokenizer.ggml.merges\" is missing");
  const auto* types = file.get_ints("tokenizer.ggml.token_type");
  check(types == nullptr || types->size() == tokens->size(),
        where + ": metadata \"tokenizer.ggml.token_type\" has " +
            std::to_string(types ? types->size() : 0) + " entries for " +
            std::to_string(tokens->size()) + " tokens");
  const int64_t n = static_cast<int64_t>(tokens->size());
  const auto token_of = [&](const char* key) -> std::string {
    const auto id = file.get_int(key);
    if (!id) return {};
    check(*id >= 0 && *id < n, where + ": metadata \"" + key + "\" is " + std::to_string(*id) +
                                   ", outside the vocabulary of " + std::to_string(n) + " tokens");
    return (*tokens)[static_cast<size_t>(*id)];
  };

  json vocab = json::object();
  for (int64_t id = 0; id < n; ++id) vocab[(*tokens)[static_cast<size_t>(id)]] = id;
  json merge_list = json::array();
  for (size_t r = 0; r < merges->size(); ++r) {
    const std::string& m = (*merges)[r];
    // Split at the first space after the first character, as llama.cpp does.
    const size_t space = m.find(' ', 1);
    check(space != std::string::npos, where + ": metadata \"tokenizer.ggml.merges\"[" +
                                          std::to_string(r) + "] is \"" + m +
                                          "\", expected \"left right\"");
    merge_list.push_back({m.substr(0, space), m.substr(space + 1)});
  }
  json added = json::array();
  for (int64_t id = 0; types && id < n; ++id) {
    const int64_t t = (*types)[static_cast<size_t>(id)];
    if (t != kControl && t != kUserDefined) continue;
    added.push_back({{"id", id},
                     {"content", (*tokens)[static_cast<size_t>(id)]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", t == kUserDefined},
                     {"special", t == kControl}});
  }

  const bool add_prefix_space = file.get_bool("tokenizer.ggml.add_space_prefix").value_or(false);
  const std::string bos = token_of("tokenizer.ggml.bos_token_id");
  const std::string eos = token_of("tokenizer.ggml.eos_token_id");
  json post = byte_level(add_prefix_space, true);
  if (file.get_bool("tokenizer.ggml.add_bos_token").value_or(false)) {
    check(
        !bos.empty(),
        where + ": metadata \"tokenizer.ggml.add_bos_token\" is true but there is no bos_token_id");
    post = {{"type", "TemplateProcessing"},
            {"single",
             {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"pair",
             {{{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
              {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
            {"special_tokens",
             {{bos,
               {{"id", bos},
                {"ids", {*file.get_int("tokenizer.ggml.bos_token_id")}},
                {"tokens", {bos}}}}}}};
  }
  const std::string pre = file.get_string("tokenizer.ggml.pre").value_or("default");
  json tokenizer = {{"version", "1.0"},
                    {"added_tokens", added},
                    {"normalizer", pre == "qwen2" ? json{{"type", "NFC"}} : json(nullptr)},
                    {"pre_tokenizer", pre_tokenizer(pre, add_prefix_space, where)},
                    {"post_processor", post},
                    {"decoder", byte_level(true, true)},
                    {"model",
                     {{"type", "BPE"},
                      {"dropout", nullptr},
                      {"unk_token", nullptr},
                      {"continuing_subword_prefix", nullptr},
                      {"end_of_word_suffix", nullptr},
                      {"fuse_unk", false},
                      {"byte_fallback", false},
                      {"ignore_merges", pre == "llama-bpe" || pre == "llama3"},
                      {"vocab", vocab},
                      {"merges", merge_list}}}};

  json config = json::object();
  config["bos_token"] = bos.empty() ? json(nullptr) : json(bos);
  config["eos_token"] = eos.empty() ? json(nullptr) : json(eos);
  if (const auto tmpl = file.get_string("tokenizer.chat_template")) config["chat_template"] = *tmpl;
  return {tokenizer.dump(), config.dump()};
}

}  // namespace kivi
