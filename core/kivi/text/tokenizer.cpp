#include "kivi/text/tokenizer.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kivi/text/added_vocabulary.h"
#include "kivi/text/bpe_model.h"
#include "kivi/text/byte_level.h"
#include "kivi/text/decoder.h"
#include "kivi/text/json_fields.h"
#include "kivi/text/normalizer.h"
#include "kivi/text/post_processor.h"
#include "kivi/text/pre_tokenizer.h"
#include "kivi/text/utf8.h"
#include "kivi/util/error.h"
#include "kivi/util/input_file.h"
#include "kivi/util/json_limits.h"

namespace kivi::text {

struct Tokenizer::Impl {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<Decoder> decoder;
  AddedVocabulary added;
  SpecialTokensAround around;
  // For a byte-level decoder: every id's bytes, so decoding is a concatenation.
  std::vector<std::string> byte_level_tokens;
  std::string bos_token;
  std::string eos_token;
  std::string chat_template;

  void tokenize_plain(std::string_view text, bool at_start, std::vector<int32_t>& ids) const;
};

namespace {

std::string read_text_file(const std::filesystem::path& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open the " + what);
  check_input_file(path, what);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

nlohmann::json read_json_file(const std::filesystem::path& path, const char* what) {
  const std::string text = read_text_file(path, what);
  try {
    return parse_json_bounded(text, path.string());
  } catch (const nlohmann::json::exception& e) {
    throw Error(path.string() + ": the " + what + " is not valid JSON: " + e.what());
  }
}

AddedToken parse_added_token(const nlohmann::json& spec, int32_t id, const std::string& where) {
  AddedToken token;
  token.id = id;
  token.content = json_string(spec, "content", where);
  token.special = json_bool(spec, "special", where, false);
  token.normalized = json_bool(spec, "normalized", where, !token.special);
  token.lstrip = json_bool(spec, "lstrip", where, false);
  token.rstrip = json_bool(spec, "rstrip", where, false);
  token.single_word = json_bool(spec, "single_word", where, false);
  return token;
}

// bos_token/eos_token in tokenizer_config.json: a string, {"content": ...} or null.
std::string config_token(const nlohmann::json& config, const char* key, const std::string& where) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) return json_string(*it, "content", where + "." + key);
  throw Error(where + "." + key + ": expected a string, {\"content\": ...} or null");
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const std::filesystem::path& tokenizer_json,
                               const std::optional<std::filesystem::path>& tokenizer_config) {
  Tokenizer tokenizer =
      from_json(read_json_file(tokenizer_json, "tokenizer.json"), tokenizer_json.string());
  if (tokenizer_config) {
    tokenizer.apply_config(read_json_file(*tokenizer_config, "tokenizer config"),
                           tokenizer_config->string(),
                           tokenizer_config->parent_path() / "chat_template.jinja");
  }
  return tokenizer;
}

Tokenizer Tokenizer::from_json(const nlohmann::json& tokenizer_json,
                               const nlohmann::json& tokenizer_config, const std::string& source) {
  Tokenizer tokenizer = from_json(tokenizer_json, source);
  tokenizer.apply_config(tokenizer_config, source + " (tokenizer config)", std::nullopt);
  return tokenizer;
}

Tokenizer Tokenizer::from_json(const nlohmann::json& json, const std::string& source) {
  const std::string where = source + ":";
  if (!json.is_object()) throw Error(source + ": expected a JSON object at the top level");
  check_json_depth(json, source);  // also when the caller parsed it
  auto impl = std::make_unique<Impl>();
  const auto field = [&](const char* key) {
    return json.contains(key) ? json[key] : nlohmann::json(nullptr);
  };
  if (!json.contains("model")) throw Error(source + ": missing field 'model'");
  const auto& model = json["model"];
  const std::string model_type =
      model.contains("type") ? json_type(model, where + " model") : std::string("BPE");
  if (model_type != "BPE")
    throw Error(source + ": model.type: unsupported model type '" + model_type +
                "' (supported: BPE)");
  impl->model = std::make_unique<BpeModel>(model, where + " model");
  impl->normalizer = make_normalizer(field("normalizer"), where + " normalizer");
  impl->pre_tokenizer = make_pre_tokenizer(field("pre_tokenizer"), where + " pre_tokenizer");
  impl->decoder = make_decoder(field("decoder"), where + " decoder");
  impl->around = make_post_processor(field("post_processor"), where + " post_processor");

  const auto added = field("added_tokens");
  if (!added.is_null() && !added.is_array())
    throw Error(source + ": added_tokens: expected an array");
  for (std::size_t i = 0; i < added.size(); ++i) {
    const std::string token_where = where + " added_tokens[" + std::to_string(i) + "]";
    const auto id = json_int(added[i], "id", token_where, -1);
    if (id < 0 || id > INT32_MAX) throw Error(token_where + ".id: expected a non-negative id");
    const auto bound = static_cast<int64_t>(impl->model->vocab_size()) + kMaxTokenIdGap;
    if (id >= bound)
      throw Error(token_where + ".id: " + std::to_string(id) + " is far past the vocabulary (" +
                  std::to_string(impl->model->vocab_size()) + " ids; added tokens must be below " +
                  std::to_string(bound) + ")");
    impl->added.add(parse_added_token(added[i], static_cast<int32_t>(id), token_where));
  }
  impl->added.finish();
  Tokenizer tokenizer(std::move(impl));
  if (!tokenizer.impl_->around.prefix.empty())
    tokenizer.impl_->bos_token =
        tokenizer.id_to_token(tokenizer.impl_->around.prefix.front()).value_or("");

  tokenizer.build_byte_level_table();
  return tokenizer;
}

void Tokenizer::build_byte_level_table() {
  if (!impl_->decoder || !impl_->decoder->is_byte_level()) return;
  auto& table = impl_->byte_level_tokens;
  table.assign(vocab_size(), std::string());
  for (std::size_t id = 0; id < table.size(); ++id) {
    if (const auto token = id_to_token(static_cast<int32_t>(id)))
      byte_level::decode_token(*token, table[id]);
  }
}

void Tokenizer::apply_config(const nlohmann::json& config, const std::string& source,
                             const std::optional<std::filesystem::path>& jinja) {
  const std::string where = source + ":";
  if (!config.is_object()) throw Error(source + ": expected a JSON object at the top level");
  check_json_depth(config, source);
  if (config.contains("added_tokens_decoder")) {
    const auto& decoder = config["added_tokens_decoder"];
    if (!decoder.is_object()) throw Error(where + " added_tokens_decoder: expected an object");
    for (const auto& [id_text, spec] : decoder.items()) {
      const std::string token_where = where + " added_tokens_decoder[\"" + id_text + "\"]";
      int32_t id = 0;
      try {
        id = static_cast<int32_t>(std::stol(id_text));
      } catch (const std::exception&) {
        throw Error(token_where + ": expected an integer id as the key");
      }
      if (id < 0 || std::to_string(id) != id_text ||
          id >= static_cast<int64_t>(impl_->model->vocab_size()) + kMaxTokenIdGap)
        throw Error(token_where + ": expected a token id from 0 to " +
                    std::to_string(impl_->model->vocab_size() + kMaxTokenIdGap - 1) +
                    " (the vocabulary has " + std::to_string(impl_->model->vocab_size()) + " ids)");
      impl_->added.add(parse_added_token(spec, id, token_where));
    }
    impl_->added.finish();
    build_byte_level_table();
  }
  impl_->bos_token = config_token(config, "bos_token", where);
  impl_->eos_token = config_token(config, "eos_token", where);
  for (const auto* token : {&impl_->bos_token, &impl_->eos_token}) {
    if (!token->empty() && !token_to_id(*token))
      throw Error(where + " the special token '" + *token + "' is not in the vocabulary");
  }
  if (jinja && std::filesystem::exists(*jinja)) {
    impl_->chat_template = read_text_file(*jinja, "chat template");
  } else if (config.contains("chat_template")) {
    const auto& value = config["chat_template"];
    if (value.is_string()) {
      impl_->chat_template = value.get<std::string>();
    } else if (value.is_array()) {
      // Several named templates: the one named "default" is the chat template.
      for (const auto& entry : value)
        if (entry.value("name", "") == "default")
          impl_->chat_template = entry.value("template", "");
    } else if (!value.is_null()) {
      throw Error(where + " chat_template: expected a string or a list of {name, template}");
    }
  }
}

void Tokenizer::Impl::tokenize_plain(std::string_view text, bool at_start,
                                     std::vector<int32_t>& ids) const {
  if (pre_tokenizer) {
    pre_tokenizer->split(text, at_start,
                         [&](std::string_view piece, bool) { model->tokenize(piece, ids); });
  } else {
    model->tokenize(text, ids);
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& impl = *impl_;
  std::string sanitized;
  if (!utf8::is_valid(text)) {
    sanitized = utf8::sanitize(text);
    text = sanitized;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids = impl.around.prefix;
  std::string normalized;
  for (const TextSegment& segment : impl.added.split(text, /*normalized=*/false)) {
    if (segment.token >= 0) {
      ids.push_back(segment.token);
      continue;
    }
    std::string_view plain = text.substr(segment.start, segment.end - segment.start);
    if (impl.normalizer) {
      normalized.assign(plain);
      impl.normalizer->normalize(normalized);
      plain = normalized;
    }
    for (const TextSegment& inner : impl.added.split(plain, /*normalized=*/true)) {
      if (inner.token >= 0) {
        ids.push_back(inner.token);
      } else {
        impl.tokenize_plain(plain.substr(inner.start, inner.end - inner.start),
                            segment.start == 0 && inner.start == 0, ids);
      }
    }
  }
  if (add_special_tokens)
    ids.insert(ids.end(), impl.around.suffix.begin(), impl.around.suffix.end());
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const Impl& impl = *impl_;
  auto skipped = [&](int32_t id) { return skip_special_tokens && impl.added.is_special(id); };
  if (!impl.byte_level_tokens.empty()) {
    std::string bytes;
    for (const int32_t id : ids) {
      if (id < 0 || static_cast<std::size_t>(id) >= impl.byte_level_tokens.size() || skipped(id))
        continue;
      bytes += impl.byte_level_tokens[id];
    }
    return utf8::sanitize(bytes);
  }
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    if (skipped(id)) continue;
    if (auto token = id_to_token(id)) tokens.push_back(std::move(*token));
  }
  if (!impl.decoder) {
    std::string joined;
    for (std::size_t i = 0; i < tokens.size(); ++i) joined += (i ? " " : "") + tokens[i];
    return joined;
  }
  impl.decoder->decode_chain(tokens);
  std::string text;
  for (const auto& token : tokens) text += token;
  return text;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const auto id = impl_->added.find(token)) return id;
  return impl_->model->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (const AddedToken* token = impl_->added.find(id)) return token->content;
  const std::string_view token = impl_->model->id_to_token(id);
  if (token.empty()) return std::nullopt;
  return std::string(token);
}

std::size_t Tokenizer::vocab_size() const {
  std::size_t size = impl_->model->vocab_size();
  for (const auto& token : impl_->added.tokens())
    size = std::max(size, static_cast<std::size_t>(token.id) + 1);
  return size;
}

bool Tokenizer::is_special(int32_t id) const {
  return impl_->added.is_special(id);
}

std::optional<int32_t> Tokenizer::bos_id() const {
  if (impl_->bos_token.empty()) return std::nullopt;
  return token_to_id(impl_->bos_token);
}

std::optional<int32_t> Tokenizer::eos_id() const {
  if (impl_->eos_token.empty()) return std::nullopt;
  return token_to_id(impl_->eos_token);
}

const std::string& Tokenizer::bos_token() const {
  return impl_->bos_token;
}
const std::string& Tokenizer::eos_token() const {
  return impl_->eos_token;
}
const std::string& Tokenizer::chat_template() const {
  return impl_->chat_template;
}

}  // namespace kivi::text
