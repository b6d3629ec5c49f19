// The full-precision cache on the GPU (its append kernel, plugins/fp-cache/cuda/append_rows.h)
// against the same cache on the CPU: a random history of right-padded prompts, decode steps
// with idle rows, chunks, truncates and reorders leaves both holding the same bits.
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "fp_cache_factory.h"
#include "kivi/cache/kv_cache.h"

#include "kivi_catch.h"  // last: keeps Catch's CHECK over c10's

using kivi::test::fp_cache_factory;

TEST_CASE("the fp cache's GPU appends store what its CPU appends store", "[gpu][cache]") {
  const auto [name, dtype] = GENERATE(std::pair{"fp32", at::kFloat}, std::pair{"fp16", at::kHalf},
                                      std::pair{"bf16", at::kBFloat16});
  const int64_t max_tokens = GENERATE(int64_t{0}, int64_t{700});
  INFO(name << ", max_tokens " << max_tokens);
  kivi::CacheGeometry g;
  g.num_layers = 2;
  g.num_kv_heads = 3;
  g.head_dim = 64;
  g.max_batch = 5;
  g.max_tokens = max_tokens;
  g.dtype = dtype;
  const auto factory = fp_cache_factory(name);
  auto on_cpu = factory->create(g);
  g.device = at::Device(at::kCUDA, 0);
  auto on_gpu = factory->create(g);
  std::mt19937 rng(11);
  at::manual_seed(11);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  auto append = [&](int64_t tokens, const std::vector<int64_t>& counts) {
    for (int64_t layer = 0; layer < g.num_layers; ++layer) {
      const at::Tensor k = at::randn({g.max_batch, g.num_kv_heads, tokens, g.head_dim}).to(dtype);
      // Values as a strided view (the model hands q/k/v views of one projection).
      const at::Tensor v =
          at::randn({g.max_batch, tokens, g.num_kv_heads, g.head_dim}).to(dtype).transpose(1, 2);
      on_cpu->append(layer, k, v, counts);
      on_gpu->append(layer, k.cuda(), v.cuda(), counts);
    }
  };
  auto compare = [&](const std::string& step) {
    INFO("after " << step);
    for (int64_t layer = 0; layer < g.num_layers; ++layer) {
      const kivi::CacheView a = on_cpu->view(layer), b = on_gpu->view(layer);
      REQUIRE(a.lengths == b.lengths);
      for (int64_t row = 0; row < g.max_batch; ++row) {
        const int64_t n = a.lengths[row];
        CHECK(at::equal(a.dense.k[row].narrow(1, 0, n), b.dense.k[row].narrow(1, 0, n).cpu()));
        CHECK(at::equal(a.dense.v[row].narrow(1, 0, n), b.dense.v[row].narrow(1, 0, n).cpu()));
      }
    }
  };
  std::vector<int64_t> counts(g.max_batch);
  int64_t longest = 0;
  for (auto& c : counts) longest = std::max(longest, c = uniform(0, 90));
  append(longest, counts);
  compare("prompt");
  for (int step = 0; step < 40; ++step) {
    const int64_t op = uniform(0, 9);
    if (op < 6) {
      std::vector<int64_t> decode(g.max_batch);
      for (auto& c : decode) c = uniform(0, 3) == 0 ? 0 : 1;
      append(1, decode);
      compare("decode step");
    } else if (op < 8) {
      std::vector<int64_t> chunk(g.max_batch);
      int64_t most = 0;
      for (auto& c : chunk) most = std::max(most, c = uniform(0, 30));
      append(std::max<int64_t>(most, 1), chunk);
      compare("chunk");
    } else if (op < 9) {
      std::vector<int64_t> beam(g.max_batch);
      for (auto& i : beam) i = uniform(0, g.max_batch - 1);
      on_cpu->reorder(beam);
      on_gpu->reorder(beam);
      compare("reorder");
    } else {
      const int64_t seq = uniform(-1, g.max_batch - 1);
      const int64_t keep = uniform(0, 100);
      on_cpu->truncate(keep, seq);
      on_gpu->truncate(keep, seq);
      compare("truncate");
    }
  }
}
