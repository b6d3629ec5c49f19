// The GGUF reader against the reference `gguf` Python package: every tensor of the fixtures
// (all six supported types) dequantizes to the same float32 bits; the metadata maps to the
// config it should; truncated, lying and unsupported files are kivi::Errors naming what is
// wrong, never crashes.
#include "kivi_catch.h"

#include <ATen/ATen.h>

#include <fstream>

#include "../model/model_test_support.h"
#include "gguf_test_support.h"
#include "kivi/model/gguf_file.h"
#include "kivi/model/gguf_weights.h"
#include "kivi/model/safetensors.h"
#include "kivi/util/error.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using kivi::GgufFile;
using kivi::test::gguf_fixture;

namespace {
// The file's config through the family that reads its architecture, as the loader asks.
kivi::ModelConfig gguf_config(const GgufFile& f) {
  return kivi::gguf_model_config(f, kivi::resolve_gguf_convention(kivi::test::model_registry(), f));
}
}  // namespace

namespace {

// Every tensor of `fixture`.gguf equals dequant.<name> of its reference, bit for bit.
void check_dequantization(const std::string& fixture) {
  const GgufFile file(gguf_fixture(fixture + ".gguf"));
  const kivi::SafetensorsFile ref(gguf_fixture(fixture + ".reference.safetensors"));
  REQUIRE(!file.tensors().empty());
  for (const kivi::GgufTensorInfo& t : file.tensors()) {
    INFO(fixture << ": " << t.name << " (" << kivi::ggml_type_name(static_cast<uint32_t>(t.type))
                 << ")");
    const at::Tensor ours = file.dequantize(t.name);
    const at::Tensor theirs = ref.tensor("dequant." + t.name);
    REQUIRE(ours.sizes() == theirs.sizes());
    CHECK(at::equal(ours, theirs));
  }
}

std::string error_of(const fs::path& file) {
  try {
    const GgufFile f(file);
    for (const auto& t : f.tensors()) f.dequantize(t.name);
    gguf_config(f);
  } catch (const kivi::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("GGUF dequantization equals the gguf package's, every type", "[gguf]") {
  check_dequantization("llama-mixed");  // F32, F16, BF16, Q8_0, Q4_0, Q4_1
  check_dequantization("qwen2-bias");
  std::set<std::string> types;
  const GgufFile mixed(gguf_fixture("llama-mixed.gguf"));
  for (const auto& t : mixed.tensors())
    types.insert(kivi::ggml_type_name(static_cast<uint32_t>(t.type)));
  CHECK(types == std::set<std::string>{"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"});
}

TEST_CASE("GGUF metadata maps to ModelConfig", "[gguf]") {
  const kivi::ModelConfig llama = gguf_config(GgufFile(gguf_fixture("llama-mixed.gguf")));
  CHECK(llama.architectures == std::vector<std::string>{"LlamaForCausalLM"});
  CHECK(llama.model_type == "llama");
  CHECK(llama.vocab_size == 256);
  CHECK(llama.hidden_size == 64);
  CHECK(llama.intermediate_size == 96);
  CHECK(llama.num_hidden_layers == 2);
  CHECK(llama.num_attention_heads == 2);
  CHECK(llama.num_key_value_heads == 1);
  CHECK(llama.head_dim == 64);
  CHECK(llama.tie_word_embeddings);  // no output.weight
  CHECK(llama.rope.theta == 500000.0);
  CHECK(llama.rms_norm_eps == Approx(1e-5));
  CHECK(llama.bos_token_id == 1);
  CHECK(llama.eos_token_ids == std::vector<int64_t>{2});

  const kivi::ModelConfig qwen = gguf_config(GgufFile(gguf_fixture("qwen2-bias.gguf")));
  CHECK(qwen.model_type == "qwen2");
  CHECK(qwen.num_attention_heads == 14);
  CHECK(qwen.num_key_value_heads == 2);
  CHECK_FALSE(qwen.tie_word_embeddings);
  CHECK(kivi::gguf_tensor_name("model.layers.11.self_attn.q_proj.bias") == "blk.11.attn_q.bias");
  CHECK(kivi::gguf_tensor_name("model.layers.0.mlp.down_proj.weight") == "blk.0.ffn_down.weight");
  CHECK(kivi::gguf_tensor_name("lm_head.weight") == "output.weight");
  CHECK_FALSE(kivi::gguf_tensor_name("model.layers.0.rotary_emb.inv_freq").has_value());
}

TEST_CASE("GGUF: every truncation of a real file is an error, never a crash", "[gguf]") {
  const kivi::test::TempDir dir("gguf-truncated");
  std::ifstream in(gguf_fixture("llama-mixed.gguf"), std::ios::binary);
  const std::string whole((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Every length through the header and tables, then steps through the data; the writer pads
  // the last tensor to the alignment (32), and cutting that padding loses no data.
  for (size_t n = 0; n + 32 < whole.size(); n += (n < 4096 ? 1 : 997)) {
    const fs::path cut = dir.path / "cut.gguf";
    std::ofstream(cut, std::ios::binary | std::ios::trunc)
        .write(whole.data(), static_cast<std::streamsize>(n));
    const std::string error = error_of(cut);
    INFO("truncated to " << n << " of " << whole.size() << " bytes: " << error);
    REQUIRE_FALSE(error.empty());
    CHECK_THAT(error, Contains(cut.string()));
  }
}

TEST_CASE("GGUF: lying or unsupported files name the field and value", "[gguf]") {
  const kivi::test::TempDir dir("gguf-lies");
  const fs::path f = dir.path / "bad.gguf";
  const auto expect = [&](const kivi::test::GgufBytes& b, const std::string& message) {
    b.write(f);
    const std::string error = error_of(f);
    INFO(error);
    CHECK_THAT(error, Contains(f.string()) && Contains(message));
  };
  using kivi::test::gguf_header;
  {
    auto b = gguf_header(0, 0);
    b.bytes[0] = 'X';
    expect(b, "not a GGUF file");
  }
  {
    auto b = gguf_header(0, 0);
    b.bytes[4] = 1;
    expect(b, "GGUF version 1 is not supported");
  }
  expect(gguf_header(0, uint64_t{1} << 60), "metadata count 1152921504606846976 cannot fit");
  expect(gguf_header(uint64_t{1} << 60, 0), "tensor count 1152921504606846976 cannot fit");
  expect(gguf_header(0, 1).put<uint64_t>(uint64_t{1} << 62).put<uint32_t>(0),
         "truncated GGUF file");
  expect(gguf_header(0, 1).str("general.architecture").put<uint32_t>(99),
         "unknown GGUF value type 99");
  expect(gguf_header(0, 1).str("tokens").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(uint64_t{1}
                                                                                         << 50),
         "metadata \"tokens\": array length 1125899906842624 cannot fit");
  expect(gguf_header(0, 1).kv_u32("general.architecture", 7),
         "\"general.architecture\" is a uint32, expected a string");
  expect(gguf_header(0, 1).kv_string("general.architecture", "gpt2"),
         "\"general.architecture\" is \"gpt2\", which no loaded model_family plugin reads "
         "(families loaded: llama, qwen2)");
  expect(gguf_header(0, 1).kv_string("general.architecture", "llama"),
         "metadata \"llama.embedding_length\" is missing");
  expect(gguf_header(1, 0).tensor("w", {32, 2}, 77, 0).pad_to(32),
         "tensor \"w\" has tensor type 77, which ggml does not define");
  expect(gguf_header(1, 0).tensor("w", {33}, 2, 0).pad_to(32),
         "not a multiple of Q4_0's block of 32");
  expect(gguf_header(1, 0).tensor("w", {0, 2}, 0, 0).pad_to(32), "tensor \"w\" dimension 0 is 0");
  // Sizes are bounded before any product: a dimension past 2^40, a product past 2^48 elements
  // (whose byte size would otherwise wrap and pass the extent check).
  expect(gguf_header(1, 0).tensor("w", {32, uint64_t{1} << 41}, 0, 0).pad_to(32),
         "tensor \"w\" dimension 1 is 2199023255552 (expected 1 to 2^40)");
  expect(gguf_header(1, 0).tensor("w", {uint64_t{1} << 30, uint64_t{1} << 30}, 0, 0).pad_to(32),
         "tensor \"w\" has more than 2^48 elements");
  expect(gguf_header(1, 0).tensor("w", {32}, 0, 3).pad_to(32),
         "offset 3 is not a multiple of the alignment 32");
  expect(gguf_header(1, 0).tensor("w", {32}, 0, 0).pad_to(32),
         "tensor \"w\" (F32 [32], 128 bytes at data offset 0) extends past the end");
  {
    auto b = gguf_header(2, 0).tensor("a", {32}, 0, 0).tensor("b", {32}, 0, 64).pad_to(32);
    b.bytes.resize(b.bytes.size() + 256);
    expect(b, "tensors \"a\" and \"b\" overlap");  // a: 128 bytes from 0, b from 64
  }
  {
    auto b = gguf_header(1, 0).tensor("k", {256}, 12, 0).pad_to(32);  // one Q4_K block: 144 bytes
    b.bytes.resize(b.bytes.size() + 160);
    expect(b,
           "tensor \"k\" is stored as Q4_K, which kivi cannot read (supported: F32, F16, BF16, "
           "Q8_0, Q4_0, Q4_1)");
  }
  {
    auto b = gguf_header(0, 2).kv_string("a", "x").kv_string("a", "y");
    expect(b, "metadata key \"a\" appears twice");
  }
  // Strings are UTF-8 (found by fuzz_gguf: a token with a stray 0x85 crashed the tokenizer.json
  // built from the vocabulary). Overlong forms, surrogates and cut sequences are refused too.
  expect(gguf_header(0, 1).kv_string("x", "ok\x85"),
         "metadata \"x\" is not valid UTF-8 (byte 2 of the string");
  expect(gguf_header(0, 1).kv_string("bad\xC0\xAFkey", "v"),
         "metadata entry 0 key is not valid UTF-8 (byte 3");
  expect(gguf_header(0, 1).kv_string("x", "\xED\xA0\x80"), "is not valid UTF-8 (byte 0");
  expect(gguf_header(0, 1).kv_string("x", "\xE2\x82"), "is not valid UTF-8 (byte 0");
  expect(gguf_header(0, 1).kv_string("x", "\xF4\x90\x80\x80"), "is not valid UTF-8 (byte 0");
  // Well-formed multi-byte text reads (the error is the next missing thing, not the encoding).
  expect(gguf_header(0, 1).kv_string("general.architecture",
                                     "llama\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"),
         "which no loaded model_family plugin reads");
}
