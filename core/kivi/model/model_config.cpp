#include "kivi/model/model_config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kivi/util/error.h"
#include "kivi/util/input_file.h"
#include "kivi/util/json_limits.h"

namespace kivi {
namespace {

using nlohmann::json;

std::string read_text(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  check(static_cast<bool>(in), file.string() + ": cannot open (needed to load the model)");
  check_input_file(file, "model configuration", uint64_t{16} << 20);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

json parse_json(const std::string& text, const std::string& source) {
  try {
    return parse_json_bounded(text, source);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for 1e999
    throw Error(source + ": malformed JSON: " + e.what());
  }
}

// Typed access to one JSON object, with messages naming the file and the field.
class Fields {
 public:
  Fields(const json& object, std::string source, std::string prefix = "")
      : object_(object), source_(std::move(source)), prefix_(std::move(prefix)) {}

  bool has(const std::string& key) const {
    return object_.contains(key) && !object_.at(key).is_null();
  }
  [[noreturn]] void fail(const std::string& key, const std::string& expected) const {
    const std::string found = object_.contains(key) ? object_.at(key).dump() : "nothing";
    throw Error(source_ + ": field \"" + prefix_ + key + "\" is " + found + ", expected " +
                expected);
  }
  int64_t integer(const std::string& key, std::optional<int64_t> fallback = std::nullopt) const {
    if (!has(key)) {
      if (fallback) return *fallback;
      fail(key, "an integer (the field is required)");
    }
    const json& v = object_.at(key);
    if (!v.is_number_integer()) fail(key, "an integer");
    return v.get<int64_t>();
  }
  int64_t positive(const std::string& key, std::optional<int64_t> fallback = std::nullopt) const {
    const int64_t v = integer(key, fallback);
    if (v <= 0) fail(key, "a positive integer");
    return v;
  }
  double number(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    const json& v = object_.at(key);
    if (!v.is_number()) fail(key, "a number");
    return v.get<double>();
  }
  bool boolean(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& v = object_.at(key);
    if (!v.is_boolean()) fail(key, "true or false");
    return v.get<bool>();
  }
  std::string string(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const json& v = object_.at(key);
    if (!v.is_string()) fail(key, "a string");
    return v.get<std::string>();
  }
  std::vector<std::string> strings(const std::string& key) const {
    std::vector<std::string> out;
    if (!has(key)) return out;
    const json& v = object_.at(key);
    if (!v.is_array()) fail(key, "a list of strings");
    for (const json& item : v) {
      if (!item.is_string()) fail(key, "a list of strings");
      out.push_back(item.get<std::string>());
    }
    return out;
  }
  // A token id given as a number or a list of numbers (eos_token_id).
  std::vector<int64_t> token_ids(const std::string& key) const {
    std::vector<int64_t> out;
    if (!has(key)) return out;
    const json& v = object_.at(key);
    if (v.is_number_integer()) return {v.get<int64_t>()};
    if (!v.is_array()) fail(key, "a token id or a list of token ids");
    for (const json& item : v) {
      if (!item.is_number_integer()) fail(key, "a token id or a list of token ids");
      out.push_back(item.get<int64_t>());
    }
    return out;
  }
  std::optional<int64_t> token_id(const std::string& key) const {
    const auto ids = token_ids(key);
    if (ids.empty()) return std::nullopt;
    if (ids.size() != 1) fail(key, "one token id");
    return ids[0];
  }

 private:
  const json& object_;
  std::string source_;
  std::string prefix_;
};

RopeConfig read_rope(const json& root, const Fields& top, const std::string& source,
                     int64_t max_position_embeddings) {
  RopeConfig rope;
  rope.theta = top.number("rope_theta", rope.theta);
  if (!(std::isfinite(rope.theta) && rope.theta > 0.0))
    top.fail("rope_theta", "a positive number (the rotary base)");
  rope.partial_rotary_factor = top.number("partial_rotary_factor", 1.0);
  // Older configs: rope_scaling (null when unscaled). transformers 5: rope_parameters, which
  // also carries rope_theta.
  std::string key;
  if (top.has("rope_scaling"))
    key = "rope_scaling";
  else if (top.has("rope_parameters"))
    key = "rope_parameters";
  if (key.empty()) return rope;
  const json& table = root.at(key);
  if (!table.is_object()) top.fail(key, "an object with \"rope_type\" (or \"type\")");
  const Fields f(table, source, key + ".");
  const std::string type_key = f.has("rope_type") ? "rope_type" : "type";  // both occur
  rope.type = f.string(type_key, "default");
  rope.theta = f.number("rope_theta", rope.theta);
  if (!(std::isfinite(rope.theta) && rope.theta > 0.0))
    f.fail("rope_theta", "a positive number (the rotary base)");
  rope.partial_rotary_factor = f.number("partial_rotary_factor", rope.partial_rotary_factor);
  if (rope.type == "default") return rope;
  if (rope.type != "linear" && rope.type != "dynamic" && rope.type != "llama3")
    f.fail(type_key, "one of the supported rope types: default, linear, dynamic, llama3");
  if (!f.has("factor")) f.fail("factor", "a number (required by rope type \"" + rope.type + "\")");
  rope.factor = f.number("factor", 1.0);
  if (!(rope.factor >= 1.0)) f.fail("factor", "a number >= 1");
  if (rope.type == "llama3") {
    rope.low_freq_factor = f.number("low_freq_factor", rope.low_freq_factor);
    rope.high_freq_factor = f.number("high_freq_factor", rope.high_freq_factor);
    if (!(rope.high_freq_factor > rope.low_freq_factor))
      f.fail("high_freq_factor", "a number above low_freq_factor");
    rope.original_max_position_embeddings =
        f.positive("original_max_position_embeddings",
                   top.integer("original_max_position_embeddings", max_position_embeddings));
  }
  return rope;
}

}  // namespace

int64_t position_limit(const ModelConfig& config) {
  return config.rope.type == "dynamic" ? 0 : config.max_position_embeddings;
}

std::optional<at::ScalarType> parse_dtype_name(const std::string& name) {
  if (name == "float32" || name == "float" || name == "fp32") return at::kFloat;
  if (name == "float16" || name == "half" || name == "fp16") return at::kHalf;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  return std::nullopt;
}

ConfigFields::ConfigFields(const std::string& json_text, std::string source)
    : json_(std::make_shared<const json>(parse_json(json_text, source))),
      source_(std::move(source)) {
  check(static_cast<const json*>(json_.get())->is_object(),
        source_ + ": expected a JSON object at the top level");
}

namespace {
const json& object_of(const std::shared_ptr<const void>& p) {
  return *static_cast<const json*>(p.get());
}
}  // namespace

bool ConfigFields::has(const std::string& key) const {
  return Fields(object_of(json_), source_).has(key);
}
int64_t ConfigFields::integer(const std::string& key, std::optional<int64_t> fallback) const {
  return Fields(object_of(json_), source_).integer(key, fallback);
}
double ConfigFields::number(const std::string& key, double fallback) const {
  return Fields(object_of(json_), source_).number(key, fallback);
}
bool ConfigFields::boolean(const std::string& key, bool fallback) const {
  return Fields(object_of(json_), source_).boolean(key, fallback);
}
std::string ConfigFields::string(const std::string& key, const std::string& fallback) const {
  return Fields(object_of(json_), source_).string(key, fallback);
}
std::vector<std::string> ConfigFields::strings(const std::string& key) const {
  return Fields(object_of(json_), source_).strings(key);
}
void ConfigFields::fail(const std::string& key, const std::string& expected) const {
  Fields(object_of(json_), source_).fail(key, expected);
}

namespace {

// Special token ids index the embedding and the logits: each must lie in the vocabulary. A
// negative pad_token_id (old configs write -1) means none.
void check_token_ids(ModelConfig& c, const Fields& f) {
  const std::string range =
      "token ids from 0 to vocab_size - 1 = " + std::to_string(c.vocab_size - 1);
  auto in_vocab = [&](int64_t id) { return id >= 0 && id < c.vocab_size; };
  if (c.bos_token_id && !in_vocab(*c.bos_token_id)) f.fail("bos_token_id", range);
  for (int64_t id : c.eos_token_ids)
    if (!in_vocab(id)) f.fail("eos_token_id", range);
  if (c.pad_token_id && *c.pad_token_id < 0) c.pad_token_id.reset();
  if (c.pad_token_id && !in_vocab(*c.pad_token_id)) f.fail("pad_token_id", range);
}

}  // namespace

ModelConfig parse_model_config(const std::string& json_text, const std::string& source) {
  const json root = parse_json(json_text, source);
  check(root.is_object(), source + ": expected a JSON object at the top level");
  const Fields f(root, source);
  ModelConfig c;
  c.source = source;
  c.raw_json = json_text;
  c.architectures = f.strings("architectures");
  c.model_type = f.string("model_type", "");
  c.vocab_size = f.positive("vocab_size");
  c.hidden_size = f.positive("hidden_size");
  c.intermediate_size = f.positive("intermediate_size");
  c.num_hidden_layers = f.positive("num_hidden_layers");
  c.num_attention_heads = f.positive("num_attention_heads");
  c.num_key_value_heads = f.positive("num_key_value_heads", c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    f.fail("num_key_value_heads",
           "a divisor of num_attention_heads = " + std::to_string(c.num_attention_heads));
  if (f.has("head_dim")) {
    c.head_dim = f.positive("head_dim");
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      f.fail("num_attention_heads", "a divisor of hidden_size = " + std::to_string(c.hidden_size) +
                                        " (no head_dim is given)");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0) f.fail("head_dim", "an even number (rotary embedding pairs halves)");
  c.max_position_embeddings = f.positive("max_position_embeddings", 2048);
  c.rms_norm_eps = f.number("rms_norm_eps", c.rms_norm_eps);
  if (!(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0.0 && c.rms_norm_eps < 1.0))
    f.fail("rms_norm_eps", "a number between 0 and 1 (RMSNorm's epsilon)");
  c.hidden_act = f.string("hidden_act", "silu");
  if (c.hidden_act != "silu") f.fail("hidden_act", "\"silu\" (the gated SiLU MLP)");
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  c.attention_bias = f.boolean("attention_bias", false);
  c.mlp_bias = f.boolean("mlp_bias", false);
  c.rope = read_rope(root, f, source, c.max_position_embeddings);
  if (c.rope.partial_rotary_factor != 1.0)
    f.fail("partial_rotary_factor", "1.0 (partial rotary embeddings are not supported)");

  const std::string dtype = f.string("torch_dtype", f.string("dtype", ""));
  if (!dtype.empty()) {
    c.torch_dtype = parse_dtype_name(dtype);
    if (!c.torch_dtype)
      f.fail(f.has("torch_dtype") ? "torch_dtype" : "dtype",
             "\"float32\", \"float16\" or \"bfloat16\"");
  }
  c.bos_token_id = f.token_id("bos_token_id");
  c.eos_token_ids = f.token_ids("eos_token_id");
  c.pad_token_id = f.token_id("pad_token_id");
  check_token_ids(c, f);
  return c;
}

void apply_generation_config(ModelConfig& config, const std::string& json_text,
                             const std::string& source) {
  const json root = parse_json(json_text, source);
  check(root.is_object(), source + ": expected a JSON object at the top level");
  const Fields f(root, source);
  auto& g = config.generation;
  g.present = true;
  g.do_sample = f.boolean("do_sample", g.do_sample);
  g.temperature = f.number("temperature", g.temperature);
  g.top_p = f.number("top_p", g.top_p);
  g.top_k = f.integer("top_k", g.top_k);
  g.max_length = f.integer("max_length", g.max_length);
  g.max_new_tokens = f.integer("max_new_tokens", g.max_new_tokens);
  g.repetition_penalty = f.number("repetition_penalty", g.repetition_penalty);
  if (auto bos = f.token_id("bos_token_id")) config.bos_token_id = bos;
  if (auto eos = f.token_ids("eos_token_id"); !eos.empty()) config.eos_token_ids = eos;
  if (auto pad = f.token_id("pad_token_id")) config.pad_token_id = pad;
  check_token_ids(config, f);
}

ModelConfig load_model_config(const std::filesystem::path& folder) {
  const auto file = folder / "config.json";
  ModelConfig config = parse_model_config(read_text(file), file.string());
  config.folder = folder;
  const auto generation = folder / "generation_config.json";
  if (std::filesystem::exists(generation))
    apply_generation_config(config, read_text(generation), generation.string());
  return config;
}

}  // namespace kivi
