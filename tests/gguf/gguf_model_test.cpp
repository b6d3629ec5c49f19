// Models loaded from GGUF files against transformers' GGUF loading of the same files: the tiny
// fixtures (llama with all six types and q/k permuted, qwen2 with biases) always; the real
// SmolLM2-135M-Instruct when tools/fetch-smollm2.sh has fetched it (skipped otherwise): every
// dequantized tensor's bits, logits, greedy tokens, tokenizer and chat template.
#include "kivi_catch.h"

#include <ATen/ATen.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "../model/model_test_support.h"
#include "gguf_test_support.h"
#include "kivi/attention/attention.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/model/gguf_file.h"
#include "kivi/model/gguf_tokenizer.h"
#include "kivi/model/gguf_weights.h"
#include "kivi/model/safetensors.h"
#include "kivi/model_loader.h"
#include "kivi/text/chat_template.h"
#include "kivi/text/tokenizer.h"
#include "test_paths.h"
#include "test_skip.h"

namespace fs = std::filesystem;
using kivi::test::gguf_fixture;
using kivi::test::model_registry;

namespace {

kivi::LoadedModel load_gguf(const fs::path& file, const std::string& attention = "eager") {
  kivi::ModelOptions options;
  options.attention = model_registry().create<kivi::Attention>(attention);
  return kivi::load_model(model_registry(), file, options);
}

// Logits [T, V] of one unpadded prompt through a fresh fp32 cache.
at::Tensor prompt_logits(kivi::CausalLM& model, const at::Tensor& ids /* [T] */) {
  auto cache =
      model_registry().create<kivi::KVCacheFactory>("fp32")->create(model.cache_geometry(1));
  const int64_t t = ids.size(0);
  return model.forward(ids.view({1, t}), at::arange(t, at::kLong).view({1, t}), {}, *cache)[0];
}

std::vector<int64_t> greedy(kivi::CausalLM& model, const std::vector<int64_t>& prompt,
                            int64_t steps) {
  auto cache =
      model_registry().create<kivi::KVCacheFactory>("fp32")->create(model.cache_geometry(1));
  const int64_t t = static_cast<int64_t>(prompt.size());
  at::Tensor logits = model.forward(at::tensor(prompt, at::kLong).view({1, t}),
                                    at::arange(t, at::kLong).view({1, t}), {}, *cache);
  std::vector<int64_t> out;
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t next = logits[0][-1].argmax().item<int64_t>();
    out.push_back(next);
    logits = model.forward(at::tensor({next}, at::kLong).view({1, 1}),
                           at::tensor({t + s}, at::kLong).view({1, 1}), {}, *cache);
  }
  return out;
}

kivi::text::Tokenizer gguf_tokenizer(const fs::path& file) {
  const auto files = kivi::gguf_tokenizer_files(kivi::GgufFile(file));
  return kivi::text::Tokenizer::from_json(nlohmann::json::parse(files.tokenizer_json),
                                          nlohmann::json::parse(files.tokenizer_config_json),
                                          file.string());
}

// The bits checksum of make_gguf_fixtures.py: sum of bits_i * (2i + 1) mod 2^64.
std::string bits_checksum(const at::Tensor& x) {
  const at::Tensor c = x.contiguous();
  const auto* bits = reinterpret_cast<const uint32_t*>(c.data_ptr<float>());
  uint64_t h = 0;
  for (int64_t i = 0; i < c.numel(); ++i)
    h += uint64_t{bits[i]} * (2 * static_cast<uint64_t>(i) + 1);
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
  return text;
}

nlohmann::json smollm2_reference() {
  std::ifstream in(gguf_fixture("smollm2-reference.json"));
  return nlohmann::json::parse(in);
}

}  // namespace

TEST_CASE("GGUF fixtures: logits equal transformers' GGUF loading (fp32)", "[gguf]") {
  for (const std::string name : {"llama-mixed", "qwen2-bias"}) {
    for (const std::string attention : {"eager", "sdpa"}) {
      auto loaded = load_gguf(gguf_fixture(name + ".gguf"), attention);
      const kivi::SafetensorsFile ref(gguf_fixture(name + ".reference.safetensors"));
      const at::Tensor logits = prompt_logits(*loaded.model, ref.tensor("prompt_ids"));
      const double diff = (logits - ref.tensor("logits")).abs().max().item<double>();
      INFO(name << " " << attention << ": max |logit diff| " << diff);
      CHECK(diff < 1e-4);
      WARN(name << " (" << attention << "): max |logit diff| vs transformers " << diff);
    }
  }
}

TEST_CASE("GGUF fixture: q/k are un-permuted (a permuted load would differ)", "[gguf]") {
  // llama-mixed's blk.0.attn_q is Q8_0 and permuted in the file; the model must see HF rows.
  const kivi::GgufFile file(gguf_fixture("llama-mixed.gguf"));
  const kivi::GgufConvention convention =
      kivi::resolve_gguf_convention(kivi::test::model_registry(), file);
  const kivi::ModelConfig config = kivi::gguf_model_config(file, convention);
  kivi::GgufWeights weights(
      std::make_shared<const kivi::GgufFile>(gguf_fixture("llama-mixed.gguf")), config, convention);
  const at::Tensor raw = file.dequantize("blk.0.attn_q.weight");  // [128, 64], ggml row order
  const at::Tensor hf =
      weights.load("model.layers.0.self_attn.q_proj.weight", {128, 64}, at::kFloat);
  CHECK_FALSE(at::equal(raw, hf));
  // Row 1 of ggml's order is row head_dim/2 of HF's (the second half's first element).
  CHECK(at::equal(raw[1], hf[32]));
  CHECK(at::equal(raw[0], hf[0]));
}

TEST_CASE("GGUF tokenizer equals the tokenizer.json it was made from", "[gguf]") {
  const auto ours = gguf_tokenizer(gguf_fixture("tokenizer-kivi-llama-tiny.gguf"));
  const auto folder = kivi::text::Tokenizer::from_file(
      kivi::test::source_dir() / "models" / "kivi-llama-tiny" / "tokenizer.json",
      kivi::test::source_dir() / "models" / "kivi-llama-tiny" / "tokenizer_config.json");
  CHECK(ours.vocab_size() == folder.vocab_size());
  std::vector<std::string> texts = {"It is a truth universally acknowledged, that a single man",
                                    "Numbers 12345 and 3.14159, 'quotes' don't stop",
                                    "  spaces\n\nnew lines\ttabs <|bos|> special <|eos|>",
                                    "café 東京 🙂"};
  std::ifstream in(kivi::test::data_dir() / "persuasion-ch1-6.txt");
  std::string persuasion((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(persuasion.size() > 20000);
  texts.push_back(persuasion.substr(0, 20000));
  for (const std::string& text : texts) {
    INFO(text.substr(0, 80));
    CHECK(ours.encode(text, false) == folder.encode(text, false));
    CHECK(ours.encode(text, true) == folder.encode(text, true));  // add_bos_token
    const auto ids = ours.encode(text, false);
    CHECK(ours.decode(ids, false) == folder.decode(ids, false));
  }
  CHECK(ours.bos_id() == 0);
  CHECK(ours.eos_id() == 1);
  CHECK(ours.is_special(0));
  const kivi::text::ChatTemplate chat(ours.chat_template());
  const std::vector<kivi::text::ChatMessage> messages = {{"user", "Hi"}};
  CHECK(chat.render(messages, true) == "<|bos|>user\nHi<|eos|>\n<|bos|>assistant\n");
}

TEST_CASE("SmolLM2-135M-Instruct GGUF: tensors, logits, greedy tokens, tokenizer, template",
          "[gguf]") {
  if (!kivi::test::smollm2_available()) {
    kivi::test::skip_test(kivi::test::smollm2_path().string() +
                          " is absent (tools/fetch-smollm2.sh fetches it)");
    return;
  }
  const nlohmann::json ref = smollm2_reference();
  const kivi::GgufFile file(kivi::test::smollm2_path());
  REQUIRE(file.tensors().size() == ref["tensors"].size());
  for (const kivi::GgufTensorInfo& t : file.tensors()) {
    INFO(t.name);
    const nlohmann::json& r = ref["tensors"].at(t.name);
    CHECK(kivi::ggml_type_name(static_cast<uint32_t>(t.type)) == r["type"].get<std::string>());
    CHECK(t.shape == r["shape"].get<std::vector<int64_t>>());
    CHECK(bits_checksum(file.dequantize(t.name)) == r["bits_checksum"].get<std::string>());
  }

  const auto tokenizer = gguf_tokenizer(kivi::test::smollm2_path());
  for (const auto& [text, ids] : ref["encode"].items()) {
    INFO(text);
    const auto ours = tokenizer.encode(text, false);
    CHECK(std::vector<int64_t>(ours.begin(), ours.end()) == ids.get<std::vector<int64_t>>());
  }
  // llama.cpp's "smollm" pre-tokenizer isolates every digit (transformers' GGUF converter does
  // not).
  CHECK(tokenizer.encode("2024", false).size() == 4);
  const kivi::text::ChatTemplate chat(tokenizer.chat_template());
  const std::string rendered =
      chat.render(ref["chat_messages"], true,
                  {{"bos_token", tokenizer.bos_token()}, {"eos_token", tokenizer.eos_token()}});
  CHECK(rendered == ref["chat_rendered"].get<std::string>());
  const auto prompt_ids = tokenizer.encode(rendered, false);
  const std::vector<int64_t> prompt(prompt_ids.begin(), prompt_ids.end());
  CHECK(prompt == ref["prompt_ids"].get<std::vector<int64_t>>());

  auto loaded = load_gguf(kivi::test::smollm2_path(), "sdpa");
  CHECK(loaded.family_name == "llama");
  const at::Tensor logits = prompt_logits(*loaded.model, at::tensor(prompt, at::kLong));
  const kivi::SafetensorsFile ref_logits(gguf_fixture("smollm2-reference.safetensors"));
  const auto positions = ref["logit_positions"].get<std::vector<int64_t>>();
  const at::Tensor ours = logits.index_select(0, at::tensor(positions, at::kLong));
  const double diff = (ours - ref_logits.tensor("logits")).abs().max().item<double>();
  WARN("SmolLM2: max |logit diff| vs transformers' GGUF loading "
       << diff << " (logits up to " << ref_logits.tensor("logits").abs().max().item<double>()
       << ")");
  CHECK(diff < 2e-3);  // fp32 over 30 layers; measured in docs/gguf.md
  // transformers stopped at <|im_end|>; the same number of greedy steps here.
  const auto greedy_ref = ref["greedy_ids"].get<std::vector<int64_t>>();
  CHECK(greedy(*loaded.model, prompt, static_cast<int64_t>(greedy_ref.size())) == greedy_ref);
}
