// The generation loop and beam search on a tiny dummy-weight Llama (vocab 8): a padded batch
// gives each row what it gets alone; a finished row stores nothing more; beam search with
// enough beams finds the exhaustive search's best sequence.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>

#include <ATen/ATen.h>

#include "kivi/attention/attention.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/generate/generate.h"
#include "model_test_support.h"

namespace gen = kivi::generate;
using Catch::Matchers::Contains;

namespace {

struct TinyModel {
  kivi::test::TempDir dir{"generate-tiny"};
  kivi::LoadedModel loaded;
  std::shared_ptr<kivi::KVCacheFactory> cache =
      kivi::test::model_registry().create<kivi::KVCacheFactory>("fp32");

  TinyModel() {
    std::ofstream(dir.path / "config.json")
        << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 8,)"
        << R"( "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2,)"
        << R"( "num_key_value_heads": 1, "max_position_embeddings": 16, "rope_theta": 10000.0,)"
        << R"( "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "bos_token_id": 0, "eos_token_id": 1})";
    kivi::ModelOptions options;
    options.attention = kivi::test::model_registry().create<kivi::Attention>("eager");
    loaded = kivi::load_model(kivi::test::model_registry(), dir.path, options, "dummy", 11);
  }
  kivi::CausalLM& model() { return *loaded.model; }
  std::unique_ptr<kivi::KVCache> new_cache(int64_t batch) {
    return cache->create(model().cache_geometry(batch));
  }
};

// log p of every next token after each position: [B, T, V], from one fresh prefill.
at::Tensor log_probs(TinyModel& m, const std::vector<std::vector<int64_t>>& rows) {
  const int64_t batch = static_cast<int64_t>(rows.size()),
                length = static_cast<int64_t>(rows[0].size());
  at::Tensor ids = at::empty({batch, length}, at::kLong);
  for (int64_t b = 0; b < batch; ++b) ids[b] = at::tensor(rows[b], at::kLong);
  auto cache = m.new_cache(batch);
  const at::Tensor positions =
      at::arange(length, at::kLong).unsqueeze(0).expand({batch, length}).contiguous();
  return at::log_softmax(m.model().forward(ids, positions, {}, *cache).to(at::kDouble), -1);
}

}  // namespace

TEST_CASE("a padded batch of prompts gives each row its own greedy continuation", "[generate]") {
  TinyModel m;
  const std::vector<std::vector<int64_t>> prompts = {{0, 3, 4}, {0, 5}, {0, 2, 6, 7, 3, 2}};
  gen::GenerateOptions o;
  o.max_new_tokens = 6;
  auto cache = m.new_cache(3);
  const auto batch = gen::generate(m.model(), *cache, prompts, o);
  for (size_t b = 0; b < prompts.size(); ++b) {
    auto alone_cache = m.new_cache(1);
    const auto alone = gen::generate(m.model(), *alone_cache, {prompts[b]}, o);
    CHECK(batch[b].tokens == alone[0].tokens);
    CHECK(batch[b].tokens.size() == 6);
    CHECK(batch[b].stop == gen::StopReason::kMaxNewTokens);
  }

  SECTION("a row that ends at an EOS stores nothing more while the others go on") {
    gen::GenerateOptions e = o;
    e.eos_ids = {batch[0].tokens[0]};  // row 0's first token ends it
    auto c = m.new_cache(3);
    const auto ended = gen::generate(m.model(), *c, prompts, e);
    CHECK(ended[0].tokens == std::vector<int64_t>{batch[0].tokens[0]});
    CHECK(ended[0].stop == gen::StopReason::kEos);
    CHECK(c->length(0) == 3);  // the prompt only: the EOS was never fed
    for (size_t b = 1; b < prompts.size(); ++b) {
      // Up to its own EOS (if it makes that token), a row is unchanged.
      for (size_t i = 0; i < ended[b].tokens.size(); ++i)
        CHECK(ended[b].tokens[i] == batch[b].tokens[i]);
      CHECK(c->length(b) == static_cast<int64_t>(prompts[b].size() + ended[b].tokens.size()) - 1);
    }
  }
}

TEST_CASE("seeded sampling in a batch is reproducible and per row", "[generate]") {
  TinyModel m;
  gen::GenerateOptions o;
  o.max_new_tokens = 8;
  o.sampling.temperature = 1.5;
  o.seed = 99;
  auto run = [&](const std::vector<std::vector<int64_t>>& prompts) {
    auto cache = m.new_cache(static_cast<int64_t>(prompts.size()));
    return gen::generate(m.model(), *cache, prompts, o);
  };
  const auto a = run({{0, 3}, {0, 4, 5}});
  const auto b = run({{0, 3}, {0, 4, 5}});
  CHECK(a[0].tokens == b[0].tokens);
  CHECK(a[1].tokens == b[1].tokens);
  CHECK(run({{0, 3}})[0].tokens == a[0].tokens);  // row 0 uses seed + 0 whatever the batch
}

TEST_CASE("a prompt longer than the context is a clear error", "[generate]") {
  TinyModel m;
  gen::GenerateOptions o;
  auto cache = m.new_cache(1);
  const std::vector<int64_t> long_prompt(17, 3);
  CHECK_THROWS_WITH(gen::generate(m.model(), *cache, {long_prompt}, o),
                    Contains("prompt 0 has 17 tokens, longer than the context of 16"));
  o.context = 4;
  CHECK_THROWS_WITH(gen::generate(m.model(), *cache, {{0, 1, 2, 3, 4}}, o),
                    Contains("context of 4"));
  // Generation stops when the context is full.
  auto c2 = m.new_cache(1);
  const auto r = gen::generate(m.model(), *c2, {{0, 2, 3}}, o);
  CHECK(r[0].stop == gen::StopReason::kContext);
  CHECK(r[0].tokens.size() == 2);  // the first token is fed at position 3, the last one
}

TEST_CASE("beam search with enough beams finds the exhaustive search's best sequence",
          "[generate][beam]") {
  TinyModel m;
  const std::vector<int64_t> prompt = {0, 4, 2};
  // Exhaustive over 3 new tokens: every (t1, t2) prefix, best t3 from the last position.
  std::vector<std::vector<int64_t>> rows;
  for (int64_t t1 = 0; t1 < 8; ++t1)
    for (int64_t t2 = 0; t2 < 8; ++t2) rows.push_back({0, 4, 2, t1, t2});
  const at::Tensor lp = log_probs(m, rows);  // [64, 5, 8]
  double best = -1e300;
  std::vector<int64_t> best_tokens;
  for (int64_t r = 0; r < 64; ++r) {
    const double head = lp[r][2][rows[r][3]].item<double>() + lp[r][3][rows[r][4]].item<double>();
    const auto [v, t3] = lp[r][4].max(0);
    if (head + v.item<double>() > best) {
      best = head + v.item<double>();
      best_tokens = {rows[r][3], rows[r][4], t3.item<int64_t>()};
    }
  }
  gen::GenerateOptions o;
  o.max_new_tokens = 3;
  o.num_beams = 64;  // = V^(n-1): nothing the exhaustive search keeps is pruned
  auto cache = m.new_cache(64);
  const auto result = gen::generate(m.model(), *cache, {prompt}, o);
  REQUIRE_FALSE(result.empty());
  CHECK(result[0].tokens == best_tokens);
  CHECK(result[0].score == Approx(best / 3.0).epsilon(1e-6));

  SECTION("with few beams and an EOS, the reported score is the sequence's real one") {
    gen::GenerateOptions e;
    e.max_new_tokens = 5;
    e.num_beams = 3;
    e.eos_ids = {1};
    e.length_penalty = 0.5;
    auto c = m.new_cache(3);
    const auto beams = gen::generate(m.model(), *c, {prompt}, e);
    REQUIRE(beams.size() >= 1);
    for (size_t i = 1; i < beams.size(); ++i) CHECK(beams[i - 1].score >= beams[i].score);
    std::vector<int64_t> row = prompt;
    row.insert(row.end(), beams[0].tokens.begin(), beams[0].tokens.end());
    const at::Tensor l = log_probs(m, {row});
    double sum = 0;
    for (size_t i = 0; i < beams[0].tokens.size(); ++i)
      sum += l[0][prompt.size() - 1 + i][beams[0].tokens[i]].item<double>();
    CHECK(beams[0].score ==
          Approx(sum / std::pow(static_cast<double>(beams[0].tokens.size()), 0.5)).epsilon(1e-6));
  }
}

TEST_CASE("beam search checks the cache slots and takes one prompt", "[generate][beam]") {
  TinyModel m;
  gen::GenerateOptions o;
  o.num_beams = 4;
  auto cache = m.new_cache(2);
  CHECK_THROWS_WITH(gen::generate(m.model(), *cache, {{0, 3}}, o), Contains("num_beams is 4"));
  CHECK_THROWS_WITH(gen::generate(m.model(), *cache, {{0, 3}, {0, 4}}, o),
                    Contains("one prompt at a time"));
}
