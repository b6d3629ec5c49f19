// Golden tests: every fixture, both attention backends, the fp32 cache, CPU float32, against
// transformers' logits (tools/fixtures/make_model_fixtures.py; re-run it to regenerate).
// Bounds: max |logit diff| <= 1e-4 for prefill, decode and chunked decode; identical 32-token
// greedy continuations.
#include <iostream>

#include <ATen/ATen.h>

#include "kivi/cache/kv_cache.h"
#include "model_test_support.h"

#include "kivi_catch.h"  // last: keeps Catch's CHECK over c10's

using namespace kivi;
using namespace kivi::test;

TEST_CASE("golden: CPU float32 logits and greedy continuations match transformers",
          "[model][golden]") {
  const std::string fixture = GENERATE(from_range(model_fixture_names()));
  const std::string attention = GENERATE(as<std::string>{}, "eager", "sdpa");
  INFO("fixture " << fixture << ", attention " << attention
                  << " (fixtures: tools/fixtures/make_model_fixtures.py)");
  auto loaded = load_fixture_model(fixture, attention, at::kFloat, at::kCPU);
  const GoldenResult r = run_golden(*loaded.model, fixture, "fp32");
  std::cout << "golden cpu float32 " << fixture << " " << attention << ": prefill "
            << r.prefill_max_diff << ", decode " << r.decode_max_diff << ", chunk "
            << r.chunk_max_diff << "\n";
  CHECK(r.prefill_max_diff <= 1e-4);
  CHECK(r.decode_max_diff <= 1e-4);
  CHECK(r.chunk_max_diff <= 1e-4);
  for (size_t b = 0; b < r.greedy.size(); ++b) {
    INFO("sequence " << b);
    CHECK(r.greedy[b] == r.greedy_reference[b]);
  }
}

TEST_CASE("golden: debug taps name every stage and see the returned logits", "[model][taps]") {
  auto loaded = load_fixture_model("qwen2-bias-gqa7", "eager", at::kFloat, at::kCPU);
  std::map<std::string, at::Tensor> taps;
  loaded.model->set_tap(
      [&](const std::string& name, const at::Tensor& t) { taps[name] = t.clone(); });
  const auto ref = load_reference("qwen2-bias-gqa7");
  auto factory = model_registry().create<KVCacheFactory>("fp32");
  auto cache = factory->create(loaded.model->cache_geometry(1));
  const at::Tensor ids = ref.at("prompt_ids").narrow(0, 0, 1).narrow(1, 0, 7);
  const at::Tensor logits =
      loaded.model->forward(ids, at::arange(7, at::kLong).view({1, 7}), {}, *cache);
  for (const char* name : {"embed", "layer0.attn_norm", "layer0.q", "layer0.k", "layer0.v",
                           "layer0.attn", "layer0.attn_out", "layer0.mlp_norm", "layer0.mlp_out",
                           "layer1.out", "final_norm", "logits"}) {
    INFO(name);
    CHECK(taps.count(name) == 1);
  }
  CHECK(taps.at("layer0.q").sizes() == at::IntArrayRef({1, 14, 7, 8}));
  CHECK(at::equal(taps.at("logits"), logits));
}

TEST_CASE("golden: forward_last equals forward's last valid position of each row", "[model]") {
  auto loaded = load_fixture_model("qwen2-bias-gqa7", "eager", at::kFloat, at::kCPU);
  const auto ref = load_reference("qwen2-bias-gqa7");
  auto factory = model_registry().create<KVCacheFactory>("fp32");
  auto full_cache = factory->create(loaded.model->cache_geometry(2));
  auto last_cache = factory->create(loaded.model->cache_geometry(2));
  // Two rows of one prompt, the second right-padded after 4 tokens.
  const at::Tensor ids =
      ref.at("prompt_ids").narrow(0, 0, 1).narrow(1, 0, 7).expand({2, 7}).contiguous();
  const at::Tensor positions = at::arange(7, at::kLong).expand({2, 7}).contiguous();
  const std::vector<int64_t> counts = {7, 4};
  const at::Tensor full = loaded.model->forward(ids, positions, counts, *full_cache);  // [2, 7, V]
  const at::Tensor last = loaded.model->forward_last(ids, positions, counts, *last_cache);
  REQUIRE(last.sizes() == at::IntArrayRef({2, full.size(2)}));
  CHECK((last[0] - full[0][6]).abs().max().item<double>() <= 1e-5);
  CHECK((last[1] - full[1][3]).abs().max().item<double>() <= 1e-5);
  // The caches hold the same: the next step's logits agree.
  CHECK(last_cache->length(0) == 7);
  CHECK(last_cache->length(1) == 4);
  const at::Tensor next_ids = ids.narrow(1, 0, 1);
  const at::Tensor next_positions = at::tensor(std::vector<int64_t>{7, 4}, at::kLong).view({2, 1});
  const at::Tensor a = loaded.model->forward(next_ids, next_positions, {}, *full_cache);
  const at::Tensor b = loaded.model->forward(next_ids, next_positions, {}, *last_cache);
  CHECK(at::equal(a, b));
}

// The half-precision bounds of the GPU test (gpu_golden_test.cpp), checked on the CPU too, so
// that CI sees them hold wherever it runs.
TEST_CASE("golden: CPU half precision stays within the GPU test's bounds", "[model][golden]") {
  const std::string fixture = GENERATE(from_range(model_fixture_names()));
  const auto dtype = GENERATE(at::kHalf, at::kBFloat16);
  const double bound = half_precision_bound(dtype);
  INFO("fixture " << fixture << ", " << c10::toString(dtype));
  auto loaded = load_fixture_model(fixture, "sdpa", dtype, at::kCPU);
  const GoldenResult r = run_golden(*loaded.model, fixture, dtype == at::kHalf ? "fp16" : "bf16");
  std::cout << "golden cpu " << c10::toString(dtype) << " " << fixture << " sdpa: prefill "
            << r.prefill_max_diff << ", decode " << r.decode_max_diff << ", chunk "
            << r.chunk_max_diff << ", greedy agreeing " << greedy_agreement(r) << "\n";
  CHECK(r.prefill_max_diff <= bound);
  CHECK(r.decode_max_diff <= bound);
  CHECK(r.chunk_max_diff <= bound);
}
