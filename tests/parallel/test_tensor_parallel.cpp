// Tensor parallelism on the CPU (Gloo): 2 and 4 ranks, each a thread with its own shard of the
// model and its own cache, produce the logits of the unsharded model (float32, 1e-5 of the
// largest logit) on the
// bundled models and on fixtures whose KV heads split over the ranks, are replicated (fewer KV
// heads than ranks) or do not fit; for the float32 and the KIVI caches.
#include <algorithm>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <thread>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "kivi/attention/attention.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/model/model_config.h"
#include "kivi/parallel/shard_plan.h"
#include "kivi/parallel/tensor_parallel.h"
#include "kivi/util/error.h"
#include "kivi_catch.h"
#include "model_test_support.h"
#include "test_paths.h"

namespace kivi::test {
namespace {

// The model folders: the two bundled models and the golden fixtures.
std::filesystem::path model_folder(const std::string& name) {
  if (name.rfind("kivi-", 0) == 0) return source_dir() / "models" / name;
  return model_fixture(name);
}

// Runs body(group) on `size` threads, the ranks of one group that meet through a store on a
// port the system picks. Rethrows the first rank's exception.
void run_ranks(int64_t size, const std::function<void(TensorParallelGroup&)>& body) {
  const auto server = StoreServer::start("127.0.0.1", 0);  // any free port: tests run in parallel
  std::vector<std::exception_ptr> errors(size);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < size; ++r)
    threads.emplace_back([&, r] {
      try {
        ParallelConfig config;
        config.size = size;
        config.rank = r;
        config.port = server->port();
        config.rank0_hosts_store = false;
        config.timeout = std::chrono::seconds(60);
        auto group = TensorParallelGroup::connect(config, at::kCPU);
        body(*group);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

struct CacheChoice {
  std::string cache, attention, options;
};

CacheChoice cache_choice(const std::string& kind, int64_t head_dim) {
  if (kind == "fp32") return {"fp32", "sdpa", ""};
  // KIVI at 4 bits with a short residual window, so that the steps below quantize.
  const int64_t group = std::min<int64_t>(32, head_dim);
  return {"kivi", "kivi",
          "k_bits = 4\nv_bits = 4\ngroup_size = " + std::to_string(group) +
              "\nresidual_length = " + std::to_string(group) + "\n"};
}

// A prompt batch (two right-padded rows, the second 9 tokens shorter) and 24 decode tokens.
struct Inputs {
  at::Tensor prompt;                // [2, 45] int64
  std::vector<int64_t> counts;      // valid tokens per row
  std::vector<at::Tensor> decoded;  // 24 x [2, 1] int64
};

Inputs make_inputs(int64_t vocab) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const auto ids = at::TensorOptions().dtype(at::kLong);
  Inputs in;
  in.prompt = at::randint(vocab, {2, 45}, gen, ids);
  in.counts = {45, 36};
  for (int s = 0; s < 24; ++s) in.decoded.push_back(at::randint(vocab, {2, 1}, gen, ids));
  return in;
}

// The inputs through a fresh cache: every step's logits, concatenated along the token axis:
// [2, 45 + 24, vocab].
at::Tensor run_steps(CausalLM& model, const CacheChoice& choice, const Inputs& in) {
  const int64_t batch = in.prompt.size(0), prompt = in.prompt.size(1);
  auto factory = model_registry().create<KVCacheFactory>(choice.cache, choice.options);
  auto cache = factory->create(model.cache_geometry(batch));
  std::vector<at::Tensor> logits;
  const at::Tensor positions = at::arange(prompt, at::kLong).expand({batch, prompt}).contiguous();
  logits.push_back(model.forward(in.prompt, positions, in.counts, *cache));
  for (const at::Tensor& token : in.decoded) {
    const at::Tensor pos =
        at::tensor(std::vector<int64_t>{cache->length(0), cache->length(1)}, at::kLong)
            .view({2, 1});
    logits.push_back(model.forward(token, pos, {}, *cache));
  }
  return at::cat(logits, 1);
}

ModelOptions cpu_options(const CacheChoice& choice) {
  ModelOptions options;
  options.dtype = at::kFloat;
  options.device = at::kCPU;
  options.attention = model_registry().create<Attention>(choice.attention);
  return options;
}

// The unsharded model's logits.
at::Tensor reference_logits(const std::string& model, const std::string& cache_kind,
                            const Inputs& in) {
  ModelOptions options = cpu_options(cache_choice(cache_kind, 64));
  auto loaded = load_model(model_registry(), model_folder(model), options);
  const CacheChoice choice = cache_choice(cache_kind, loaded.model->cache_geometry(1).head_dim);
  return run_steps(*loaded.model, choice, in);
}

// Every rank's logits from `size` ranks.
std::vector<at::Tensor> sharded_logits(const std::string& model, const std::string& cache_kind,
                                       int64_t size, const Inputs& in) {
  std::vector<at::Tensor> out(size);
  run_ranks(size, [&](TensorParallelGroup& group) {
    ModelOptions options = cpu_options(cache_choice(cache_kind, 64));
    options.parallel = std::shared_ptr<TensorParallelGroup>(&group, [](TensorParallelGroup*) {});
    auto loaded = load_model(model_registry(), model_folder(model), options);
    const CacheChoice choice = cache_choice(cache_kind, loaded.model->cache_geometry(1).head_dim);
    // The same inputs on every rank, as the host gives them.
    out[group.rank()] = run_steps(*loaded.model, choice, in);
  });
  return out;
}

}  // namespace

TEST_CASE("tensor parallel: the shard plan splits heads, replicates KV heads, refuses the rest",
          "[parallel]") {
  ModelConfig config = load_model_config(model_fixture("qwen2-bias-gqa7"));  // 14 q, 2 kv heads
  const ShardPlan half = plan_shards(config, 1, 2);
  CHECK(half.q_heads == 7);
  CHECK(half.q_head_start == 7);
  CHECK(half.kv_heads == 1);
  CHECK(half.kv_head_start == 1);
  CHECK(half.kv_replicas == 1);
  CHECK(half.vocab_rows * 2 == half.vocab_padded);
  CHECK_THROWS_WITH(plan_shards(config, 0, 4),
                    Catch::Contains("[parallel] tensor = 4") &&
                        Catch::Contains("14 attention heads do not split evenly over 4 ranks"));

  ModelConfig mha = load_model_config(model_fixture("llama-tied-hd64"));  // 2 q, 1 kv head
  const ShardPlan replicated = plan_shards(mha, 1, 2);
  CHECK(replicated.q_heads == 1);
  CHECK(replicated.kv_heads == 1);
  CHECK(replicated.kv_head_start == 0);
  CHECK(replicated.kv_replicas == 2);

  mha.num_attention_heads = 12;
  mha.num_key_value_heads = 3;
  CHECK_THROWS_WITH(plan_shards(mha, 0, 2),
                    Catch::Contains("3 KV heads neither split evenly over 2 ranks nor divide it"));
  // Every query head reads the KV head its group maps to, on every rank.
  for (int64_t size : {2, 4}) {
    mha.num_key_value_heads = 2;
    for (int64_t r = 0; r < size; ++r) {
      const ShardPlan p = plan_shards(mha, r, size);
      const int64_t group = mha.num_attention_heads / mha.num_key_value_heads;
      for (int64_t h = 0; h < p.q_heads; ++h) {
        const int64_t local_group = p.q_heads / p.kv_heads;
        CHECK((p.q_head_start + h) / group == p.kv_head_start + h / local_group);
      }
    }
  }
}

TEST_CASE("tensor parallel: 2 and 4 ranks give the logits of 1 (fp32 and KIVI caches)",
          "[parallel]") {
  const std::string model =
      GENERATE(as<std::string>{}, "kivi-llama-tiny", "kivi-qwen2-tiny", "llama-gqa-llama3",
               "llama2-mha", "qwen2-bias-gqa7", "llama-tied-hd64", "qwen2-tied");
  const std::string cache = GENERATE(as<std::string>{}, "fp32", "kivi");
  const int64_t size = GENERATE(2, 4);
  const ModelConfig config = load_model_config(model_folder(model));
  const bool splits =
      config.num_attention_heads % size == 0 &&
      (config.num_key_value_heads % size == 0 || size % config.num_key_value_heads == 0);
  INFO(model << ", " << cache << " cache, " << size << " ranks");
  const Inputs in = make_inputs(config.vocab_size);
  if (!splits) {
    CHECK_THROWS_WITH(sharded_logits(model, cache, size, in),
                      Catch::Contains("[parallel] tensor = " + std::to_string(size)));
    return;
  }
  const at::Tensor want = reference_logits(model, cache, in);
  const std::vector<at::Tensor> got = sharded_logits(model, cache, size, in);
  // 1e-5 relative to the largest logit: the row-parallel layers' all-reduce adds the ranks'
  // partial sums in another order than one matrix product does, a rounding of float32 (2^-24
  // relative) per layer. The bundled models' logits reach ~20; the fixtures' stay below 1.
  const double scale = want.abs().max().item<double>();
  const double bound = 1e-5 * std::max(1.0, scale);
  for (int64_t r = 0; r < size; ++r) {
    INFO("rank " << r);
    REQUIRE(got[r].sizes() == want.sizes());
    // Valid positions only: row 1's last 9 prompt positions are padding.
    at::Tensor diff = (got[r] - want).abs();
    diff.select(0, 1).narrow(0, 36, 9).zero_();
    const double max_diff = diff.max().item<double>();
    std::cout << "tensor parallel " << model << " " << cache << " x" << size << " rank " << r
              << ": max |logit diff| " << max_diff << " (largest |logit| " << scale << ")\n";
    CHECK(max_diff <= bound);
    CHECK(at::equal(got[r], got[0]));  // every rank samples from the same logits
  }
}

}  // namespace kivi::test
