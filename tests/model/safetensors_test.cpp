// The safetensors reader: round trips, sharded checkpoints, dtype conversion on load, and
// files that lie (each a kivi::Error naming the file and the tensor).

#include <fstream>

#include <ATen/ATen.h>

#include "kivi/attention/attention.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/model/safetensors.h"
#include "kivi/model/weight_source.h"
#include "kivi/util/error.h"
#include "model_test_support.h"

#include "kivi_catch.h"  // last: keeps Catch's CHECK over c10's

using namespace kivi;
using Catch::Matchers::Contains;

TEST_CASE("safetensors: round trip of every float dtype, converted on load",
          "[model][safetensors]") {
  test::TempDir dir("st-roundtrip");
  const at::Tensor a = at::randn({3, 5});
  test::write_safetensors(dir.path / "model.safetensors", {{"a", a},
                                                           {"b", a.to(at::kBFloat16)},
                                                           {"c", a.to(at::kHalf)},
                                                           {"n", at::arange(4, at::kLong)}});
  const SafetensorsFile file(dir.path / "model.safetensors");
  CHECK((file.names() == std::vector<std::string>{"a", "b", "c", "n"}));
  CHECK(at::equal(file.tensor("a"), a));
  CHECK(at::equal(file.tensor("n"), at::arange(4, at::kLong)));
  SafetensorsWeights weights(dir.path);
  CHECK(at::equal(weights.load("b", {3, 5}, at::kFloat), a.to(at::kBFloat16).to(at::kFloat)));
  CHECK(at::equal(weights.load("c", {3, 5}, at::kHalf), a.to(at::kHalf)));
  // A load never aliases the mapping.
  at::Tensor loaded = weights.load("a", {3, 5}, at::kFloat);
  loaded.zero_();
  CHECK(at::equal(file.tensor("a"), a));
}

TEST_CASE("safetensors: a sharded checkpoint is read through its index", "[model][safetensors]") {
  SafetensorsWeights weights(test::model_fixture("llama-gqa-llama3"));
  CHECK(weights.contains("model.embed_tokens.weight"));
  CHECK(weights.contains("model.layers.1.mlp.down_proj.weight"));
  CHECK(weights.load("model.norm.weight", {64}, at::kFloat).size(0) == 64);
}

TEST_CASE("safetensors: lying or truncated files are clear errors", "[model][safetensors][bad]") {
  test::TempDir dir("st-bad");
  const auto file = dir.path / "model.safetensors";
  const std::string where = file.string();

  std::ofstream(file, std::ios::binary) << "abc";
  CHECK_THROWS_WITH(SafetensorsFile(file), Contains(where) && Contains("truncated"));

  test::write_raw_safetensors(
      file, R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 0);
  {  // header length claims more than the file holds
    std::fstream f(file, std::ios::binary | std::ios::in | std::ios::out);
    f.put(static_cast<char>(0xff));
    f.put(static_cast<char>(0xff));
  }
  CHECK_THROWS_WITH(SafetensorsFile(file), Contains(where) && Contains("truncated"));

  test::write_raw_safetensors(
      file, R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8);
  CHECK_THROWS_WITH(SafetensorsFile(file),
                    Contains(where) && Contains("\"w\"") && Contains("past the end"));

  test::write_raw_safetensors(
      file, R"({"w": {"dtype": "F32", "shape": [4, 2], "data_offsets": [0, 16]}})", 16);
  CHECK_THROWS_WITH(SafetensorsFile(file),
                    Contains("\"w\"") && Contains("[4, 2]") && Contains("needs 32"));

  test::write_raw_safetensors(
      file, R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}})", 16);
  CHECK_THROWS_WITH(SafetensorsFile(file), Contains("\"w\"") && Contains("begin after end"));

  test::write_raw_safetensors(
      file,
      R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
      16);
  CHECK_THROWS_WITH(SafetensorsFile(file), Contains("overlap"));

  test::write_raw_safetensors(file,
                              R"({"w": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 2]}})", 2);
  CHECK_THROWS_WITH(SafetensorsFile(file), Contains("\"w\"") && Contains("unsupported dtype"));

  test::write_raw_safetensors(
      file, R"({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}})", 16);
  CHECK_THROWS_WITH(SafetensorsFile(file), Contains("\"w\"") && Contains("shape"));

  // 2^61 doubles are 2^64 bytes: a byte count that wraps to 0 must not pass for an empty span.
  test::write_raw_safetensors(
      file, R"({"w": {"dtype": "F64", "shape": [2305843009213693952], "data_offsets": [0, 0]}})",
      16);
  CHECK_THROWS_WITH(SafetensorsFile(file), Contains("\"w\"") && Contains("2305843009213693952") &&
                                               Contains("more than 2^64 bytes"));

  test::write_raw_safetensors(file, R"({"w": {"dtype": "F32", "shape": [4], "data_off)", 16);
  CHECK_THROWS_WITH(SafetensorsFile(file), Contains(where) && Contains("malformed"));

  CHECK_THROWS_WITH(SafetensorsFile(dir.path / "absent.safetensors"),
                    Contains("absent.safetensors") && Contains("cannot open"));
}

TEST_CASE("dummy weights: seeded, shaped by the config alone, and they run", "[model][dummy]") {
  DummyWeights a(7), b(7), c(8);
  const at::Tensor w = a.load("model.layers.0.mlp.up_proj.weight", {32, 16}, at::kFloat);
  CHECK(w.sizes() == at::IntArrayRef({32, 16}));
  CHECK(at::equal(w, b.load("model.layers.0.mlp.up_proj.weight", {32, 16}, at::kFloat)));
  CHECK_FALSE(at::equal(w, c.load("model.layers.0.mlp.up_proj.weight", {32, 16}, at::kFloat)));
  CHECK_FALSE(at::equal(w, a.load("model.layers.1.mlp.up_proj.weight", {32, 16}, at::kFloat)));

  ModelOptions options;
  options.attention = test::model_registry().create<Attention>("sdpa");
  auto loaded = load_model(test::model_registry(), test::model_fixture("qwen2-bias-gqa7"), options,
                           "dummy", 3);
  auto cache = test::model_registry().create<KVCacheFactory>("fp32")->create(
      loaded.model->cache_geometry(1));
  const at::Tensor ids = at::arange(5, at::kLong).view({1, 5});
  const at::Tensor logits = loaded.model->forward(ids, ids, {}, *cache);
  CHECK(logits.sizes() == at::IntArrayRef({1, 5, 192}));
  CHECK(at::isfinite(logits).all().item<bool>());
}
