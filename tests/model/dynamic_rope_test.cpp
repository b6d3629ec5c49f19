// Dynamic NTK rope past max_position_embeddings, which is what it exists for: the
// llama-tied-hd64 fixture (max_position_embeddings 24, dynamic factor 2) prefills prompts of
// 40 and 29 tokens as one right-padded batch and greedy-decodes 24 tokens through
// generate::generate, against transformers run per sequence
// (tools/fixtures/make_dynamic_rope_fixture.py). Other rope types stay cut at the limit.
#include <ATen/ATen.h>

#include "kivi/cache/kv_cache.h"
#include "kivi/generate/generate.h"
#include "kivi/model/safetensors.h"
#include "model_test_support.h"
#include "test_paths.h"

#include "kivi_catch.h"  // last: keeps Catch's CHECK over c10's

using namespace kivi;
using namespace kivi::test;

namespace {

std::map<std::string, at::Tensor> dynamic_rope_reference() {
  const SafetensorsFile file(fixtures_dir() / "dynamic_rope" /
                             "reference-llama-tied-hd64.safetensors");
  std::map<std::string, at::Tensor> out;
  for (const auto& name : file.names()) out[name] = file.tensor(name).clone();
  return out;
}

std::vector<int64_t> row(const at::Tensor& t, int64_t b, int64_t n) {
  const at::Tensor r = t[b].narrow(0, 0, n).to(at::kLong).contiguous();
  return {r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + n};
}

}  // namespace

TEST_CASE("dynamic NTK rope: generation past max_position_embeddings matches transformers",
          "[model][golden]") {
  const auto ref = dynamic_rope_reference();
  auto loaded = load_fixture_model("llama-tied-hd64", "sdpa", at::kFloat, at::kCPU);
  CausalLM& model = *loaded.model;
  REQUIRE(model.config().rope.type == "dynamic");
  REQUIRE(model.config().max_position_embeddings == 24);
  const at::Tensor lengths = ref.at("prompt_lengths");
  const at::Tensor greedy = ref.at("greedy_ids");  // [B, S]
  const int64_t batch = lengths.size(0), steps = greedy.size(1);
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t b = 0; b < batch; ++b) {
    prompts.push_back(row(ref.at("prompt_ids"), b, lengths[b].item<int64_t>()));
    REQUIRE(static_cast<int64_t>(prompts.back().size()) > model.config().max_position_embeddings);
  }
  // The smallest top-1 margin along the reference's path: far above float32 noise, so equal
  // greedy tokens are a real check.
  CHECK(ref.at("greedy_min_gap").min().item<double>() > 1e-2);

  generate::GenerateOptions options;
  options.max_new_tokens = steps;
  options.context = 64;  // past max_position_embeddings: kept, since the rope is dynamic
  CHECK(generate::context_length(model, options) == 64);
  auto factory = model_registry().create<KVCacheFactory>("fp32");
  auto cache = factory->create(model.cache_geometry(batch));
  const auto results = generate::generate(model, *cache, prompts, options);
  REQUIRE(static_cast<int64_t>(results.size()) == batch);
  for (int64_t b = 0; b < batch; ++b) {
    INFO("sequence " << b << " (prompt of " << prompts[b].size() << " tokens)");
    CHECK(results[b].tokens == row(greedy, b, steps));
    CHECK(results[b].stop == generate::StopReason::kMaxNewTokens);
  }

  // The logits themselves, sequence by sequence: the prefill's last position, then every
  // greedy step fed back through the cache (positions 24 .. 63).
  for (int64_t b = 0; b < batch; ++b) {
    INFO("sequence " << b);
    auto one = factory->create(model.cache_geometry(1));
    const int64_t n = static_cast<int64_t>(prompts[b].size());
    const at::Tensor ids = at::tensor(prompts[b], at::kLong).view({1, n});
    at::Tensor logits = model.forward(ids, at::arange(n, at::kLong).view({1, n}), {}, *one);
    double max_diff = (logits[0][n - 1] - ref.at("last_logits")[b]).abs().max().item<double>();
    for (int64_t s = 0; s + 1 < steps; ++s) {
      const at::Tensor token = greedy[b].narrow(0, s, 1).view({1, 1});
      logits = model.forward(token, at::full({1, 1}, n + s, at::kLong), {}, *one);
      max_diff = std::max(
          max_diff, (logits[0][0] - ref.at("greedy_logits")[b][s + 1]).abs().max().item<double>());
    }
    CHECK(max_diff <= 1e-4);
  }
}

TEST_CASE("rope types other than dynamic are cut at max_position_embeddings", "[model]") {
  auto loaded = load_fixture_model("llama-gqa-llama3", "sdpa", at::kFloat, at::kCPU);
  REQUIRE(loaded.model->config().rope.type == "llama3");
  generate::GenerateOptions options;
  options.context = 1000;
  CHECK(generate::context_length(*loaded.model, options) ==
        loaded.model->config().max_position_embeddings);
  options.context = 0;
  CHECK(generate::context_length(*loaded.model, options) ==
        loaded.model->config().max_position_embeddings);
  CHECK(position_limit(loaded.model->config()) == 256);
  CHECK(position_limit(load_model_config(model_fixture("llama-tied-hd64"))) == 0);
}
