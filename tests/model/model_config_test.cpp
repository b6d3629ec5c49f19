// config.json / generation_config.json reading: every field the families use, both rope
// formats, eos as a number or a list, Qwen2's sliding-window fields, and clear errors.

#include <ATen/ATen.h>

#include "kivi/model/model_config.h"
#include "kivi/model/rotary.h"
#include "kivi/util/error.h"
#include "model_test_support.h"

#include "kivi_catch.h"  // last: keeps Catch's CHECK over c10's

using namespace kivi;
using Catch::Matchers::Contains;

namespace {

const char* kBase = R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 32, "hidden_size": 16,
  "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, %s})";

std::string with(const std::string& extra) {
  std::string text = kBase;
  text.replace(text.find("%s"), 2, extra.empty() ? "\"model_type\": \"llama\"" : extra);
  return text;
}

}  // namespace

TEST_CASE("model config: the fixtures' config.json files", "[model][config]") {
  const ModelConfig c = load_model_config(test::model_fixture("llama-gqa-llama3"));
  CHECK(c.architectures == std::vector<std::string>{"LlamaForCausalLM"});
  CHECK(c.num_key_value_heads == 2);
  CHECK(c.head_dim == 16);
  CHECK(c.rope.type == "llama3");
  CHECK(c.rope.factor == 8.0);
  CHECK(c.rope.original_max_position_embeddings == 64);
  CHECK(c.rms_norm_eps == 1e-5);
  CHECK(c.torch_dtype == at::kFloat);
  CHECK((c.eos_token_ids == std::vector<int64_t>{2, 3}));
  CHECK(c.generation.present);
  CHECK(c.generation.temperature == 0.6);
  CHECK(c.generation.max_length == 256);

  const ModelConfig tied = load_model_config(test::model_fixture("llama-tied-hd64"));
  CHECK(tied.tie_word_embeddings);
  CHECK(tied.head_dim == 64);  // given explicitly, not hidden_size / heads = 32
  CHECK(tied.rope.type == "dynamic");
  CHECK(tied.eos_token_ids == std::vector<int64_t>{2});
  CHECK_FALSE(tied.generation.present);

  const ModelConfig qwen = load_model_config(test::model_fixture("qwen2-tied"));
  // Qwen2's own fields: read by its family through fields(), not by the core.
  CHECK(qwen.fields().boolean("use_sliding_window", false));
  CHECK(qwen.fields().integer("sliding_window") == 8);
  CHECK(qwen.fields().integer("max_window_layers") == 1);
  CHECK(qwen.rope.theta == 1000000.0);
  CHECK(load_model_config(test::model_fixture("qwen2-bias-gqa7")).torch_dtype == at::kHalf);
}

TEST_CASE("model config: defaults and the transformers 5 rope_parameters format",
          "[model][config]") {
  const ModelConfig c = parse_model_config(with(""), "a/config.json");
  CHECK(c.num_key_value_heads == 4);
  CHECK(c.head_dim == 4);
  CHECK(c.rope.type == "default");
  CHECK(c.rope.theta == 10000.0);
  CHECK_FALSE(c.tie_word_embeddings);
  const ModelConfig p = parse_model_config(
      with(R"("rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0})"),
      "b/config.json");
  CHECK(p.rope.type == "linear");
  CHECK(p.rope.factor == 2.0);
  CHECK(p.rope.theta == 500.0);
  CHECK(parse_model_config(with(R"("rope_scaling": null, "rope_theta": 7.0)"), "c").rope.theta ==
        7.0);
}

TEST_CASE("model config: bad fields are errors naming the file and field", "[model][config][bad]") {
  CHECK_THROWS_WITH(
      parse_model_config(with(R"("rope_scaling": {"rope_type": "yarn", "factor": 4.0})"),
                         "m/config.json"),
      Contains("m/config.json") && Contains("rope_scaling.rope_type") && Contains("yarn") &&
          Contains("llama3"));
  CHECK_THROWS_WITH(
      parse_model_config(with(R"("rope_scaling": {"type": "linear"})"), "m/config.json"),
      Contains("rope_scaling.factor"));
  CHECK_THROWS_WITH(parse_model_config(with(R"("num_key_value_heads": 3)"), "m/config.json"),
                    Contains("num_key_value_heads") && Contains("3"));
  CHECK_THROWS_WITH(parse_model_config(with(R"("hidden_act": "gelu")"), "m/config.json"),
                    Contains("hidden_act") && Contains("gelu"));
  CHECK_THROWS_WITH(parse_model_config(with(R"("eos_token_id": "x")"), "m/config.json"),
                    Contains("eos_token_id"));
  // What parses but makes no sense: each names the file, the field and its value.
  CHECK_THROWS_WITH(parse_model_config(with(R"("rms_norm_eps": -1e-5)"), "m/config.json"),
                    Contains("m/config.json") && Contains("rms_norm_eps") && Contains("-1e-05"));
  CHECK_THROWS_WITH(parse_model_config(with(R"("rms_norm_eps": 0)"), "m/config.json"),
                    Contains("rms_norm_eps"));
  CHECK_THROWS_WITH(parse_model_config(with(R"("rope_theta": 0.0)"), "m/config.json"),
                    Contains("rope_theta") && Contains("positive"));
  CHECK_THROWS_WITH(
      parse_model_config(with(R"("rope_parameters": {"rope_type": "default", "rope_theta": -1.0})"),
                         "m/config.json"),
      Contains("rope_parameters.rope_theta"));
  CHECK_THROWS_WITH(parse_model_config(with(R"("eos_token_id": [2, 32])"), "m/config.json"),
                    Contains("eos_token_id") && Contains("vocab_size - 1 = 31"));
  CHECK_THROWS_WITH(parse_model_config(with(R"("bos_token_id": -3)"), "m/config.json"),
                    Contains("bos_token_id") && Contains("-3"));
  CHECK_THROWS_WITH(parse_model_config(with(R"("pad_token_id": 40)"), "m/config.json"),
                    Contains("pad_token_id") && Contains("40"));
  CHECK_FALSE(parse_model_config(with(R"("pad_token_id": -1)"), "m/config.json").pad_token_id);
  ModelConfig generation_target = parse_model_config(with(""), "m/config.json");
  CHECK_THROWS_WITH(
      apply_generation_config(generation_target, R"({"eos_token_id": 99})",
                              "m/generation_config.json"),
      Contains("m/generation_config.json") && Contains("eos_token_id") && Contains("99"));
  CHECK_THROWS_WITH(parse_model_config(with(R"("torch_dtype": "int8")"), "m/config.json"),
                    Contains("torch_dtype") && Contains("int8"));
  CHECK_THROWS_WITH(parse_model_config(R"({"vocab_size": 3)", "m/config.json"),
                    Contains("m/config.json") && Contains("malformed JSON"));
  CHECK_THROWS_WITH(parse_model_config(R"({"vocab_size": 3})", "m/config.json"),
                    Contains("hidden_size") && Contains("required"));
  CHECK_THROWS_WITH(load_model_config("/nonexistent/model"),
                    Contains("/nonexistent/model/config.json"));
  test::TempDir folder("config-is-a-folder");
  std::filesystem::create_directories(folder.path / "config.json");
  CHECK_THROWS_WITH(load_model_config(folder.path),
                    Contains("config.json: the model configuration is a directory"));
}

TEST_CASE("rotary: inverse frequencies of the scaling variants", "[model][rope]") {
  RopeConfig rope;
  rope.theta = 10000.0;
  const at::Tensor base = RotaryEmbedding(rope, 8, 16).inv_freq(1);
  CHECK(base[0].item<float>() == 1.0f);
  CHECK(base[1].item<float>() == Approx(0.1).epsilon(1e-6));  // 10000^(-2/8)
  rope.type = "linear";
  rope.factor = 4.0;
  CHECK(RotaryEmbedding(rope, 8, 16).inv_freq(1)[1].item<float>() == Approx(0.025).epsilon(1e-6));
  rope.type = "dynamic";
  rope.factor = 2.0;
  const RotaryEmbedding dynamic(rope, 8, 16);
  CHECK(at::equal(dynamic.inv_freq(16), base));  // unchanged up to max_position_embeddings
  // Past it: base' = base * (factor * L / max - (factor - 1)) ^ (dim / (dim - 2)).
  const double grown = 10000.0 * std::pow(2.0 * 32 / 16 - 1, 8.0 / 6.0);
  CHECK(dynamic.inv_freq(32)[1].item<float>() == Approx(std::pow(grown, -0.25)).epsilon(1e-5));
}
