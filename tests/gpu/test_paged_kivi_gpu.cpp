// The paged KIVI cache on the GPU against the contiguous one of the same options: the same random
// history (right-padded prompts, decode steps through the fused append kernel, chunks, forks by
// reorder, truncates) leaves both holding the same tokens bit for bit, and the fused decode and
// chunk attention kernels, reading the paged parts through the block table, give bit-identical
// outputs to the same kernels over contiguous rows. A row range (CacheRows, the server's prefill
// passes) attends like those rows of the whole batch and stores what the whole batch stores.
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "cuda_ops.h"
#include "kivi_cache.h"

#include "cache_conformance.h"  // last: it brings Catch, whose CHECK must win over c10's

using namespace kivi;
using namespace kivi::kivi_cache;

namespace {

const at::Device kGpu(at::kCUDA, 0);

void require_same_attention(KVCache& paged, KVCache& contiguous, const at::Tensor& q,
                            const std::vector<int64_t>& counts, const char* what) {
  const AttentionParams params{1.0 / std::sqrt(static_cast<double>(q.size(3))), 0, {}};
  for (int64_t layer = 0; layer < paged.geometry().num_layers; ++layer) {
    const CacheView a = paged.view(layer), b = contiguous.view(layer);
    REQUIRE(kivi_parts(a).paged());
    std::string why_a, why_b;
    const auto out_a = cuda_decode_attention(q, kivi_parts(a), a.lengths, counts, params, &why_a);
    const auto out_b = cuda_decode_attention(q, kivi_parts(b), b.lengths, counts, params, &why_b);
    INFO(what << ", layer " << layer << ": " << why_a << " / " << why_b);
    REQUIRE(out_a.has_value());
    REQUIRE(out_b.has_value());
    REQUIRE(at::equal(*out_a, *out_b));
  }
}

}  // namespace

TEST_CASE("the paged KIVI cache on the GPU holds and attends like the contiguous one",
          "[gpu][kivi][paged]") {
  const auto [dtype, bits] =
      GENERATE(std::pair{at::kHalf, int64_t{2}}, std::pair{at::kBFloat16, int64_t{4}});
  const int64_t page_tokens = GENERATE(int64_t{32}, int64_t{128});
  INFO(c10::toString(dtype) << ", " << bits << " bits, pages of " << page_tokens);
  KiviOptions options;
  options.k_bits = options.v_bits = bits;
  options.group_size = 32;
  options.residual_length = 64;
  options.page_tokens = page_tokens;
  const KiviCacheFactory factory(options);
  CacheGeometry g = test::conformance_geometry(dtype, 0);
  g.head_dim = 128;  // the kernels' usual size
  g.max_batch = 4;
  g.device = kGpu;
  auto contiguous = factory.create(g);
  g.pool_pages = 4 * 3000 / page_tokens;
  auto paged = factory.create(g);

  std::mt19937 rng(7);
  at::manual_seed(7);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  const auto kv = at::TensorOptions().dtype(dtype).device(kGpu);
  auto append = [&](int64_t tokens, const std::vector<int64_t>& counts) {
    for (int64_t layer = 0; layer < g.num_layers; ++layer) {
      const at::Tensor k = at::randn({g.max_batch, g.num_kv_heads, tokens, g.head_dim}, kv);
      const at::Tensor v = at::randn({g.max_batch, g.num_kv_heads, tokens, g.head_dim}, kv);
      paged->append(layer, k, v, counts);
      contiguous->append(layer, k, v, counts);
    }
  };
  auto same_tokens = [&](const std::string& what) {
    INFO(what);
    for (int64_t layer = 0; layer < g.num_layers; ++layer)
      REQUIRE(test::view_error(*paged, *contiguous, layer, 1.0) == 0);
  };

  std::vector<int64_t> counts(g.max_batch);
  for (auto& c : counts) c = uniform(0, 400);
  append(*std::max_element(counts.begin(), counts.end()), counts);
  same_tokens("prompt");
  for (int step = 0; step < 300; ++step) {
    const int64_t op = uniform(0, 19);
    if (op < 16) {  // decode steps, mostly
      std::vector<int64_t> decode(g.max_batch);
      for (auto& c : decode) c = uniform(0, 5) == 0 ? 0 : 1;
      const at::Tensor q = at::randn({g.max_batch, 8, 1, g.head_dim}, kv);
      require_same_attention(*paged, *contiguous, q, decode, "decode attention");
      append(1, decode);
    } else if (op < 17) {
      // A chunk: each layer's chunk attention over what is stored, then the chunk's append.
      const int64_t tokens = uniform(2, 100);
      const std::vector<int64_t> chunk(g.max_batch, tokens);
      const AttentionParams params{1.0 / std::sqrt(static_cast<double>(g.head_dim)), 0, {}};
      for (int64_t layer = 0; layer < g.num_layers; ++layer) {
        const at::Tensor q = at::randn({g.max_batch, 8, tokens, g.head_dim}, kv);
        const at::Tensor k = at::randn({g.max_batch, g.num_kv_heads, tokens, g.head_dim}, kv);
        const at::Tensor v = at::randn({g.max_batch, g.num_kv_heads, tokens, g.head_dim}, kv);
        const CacheView a = paged->view(layer), b = contiguous->view(layer);
        std::string why_a, why_b;
        const auto out_a =
            cuda_chunk_attention(q, k, v, kivi_parts(a), a.lengths, chunk, params, &why_a);
        const auto out_b =
            cuda_chunk_attention(q, k, v, kivi_parts(b), b.lengths, chunk, params, &why_b);
        INFO("chunk attention, layer " << layer << ": " << why_a << " / " << why_b);
        REQUIRE(out_a.has_value() == out_b.has_value());
        if (out_a) REQUIRE(at::equal(*out_a, *out_b));
        paged->append(layer, k, v, chunk);
        contiguous->append(layer, k, v, chunk);
      }
    } else if (op < 19) {
      std::vector<int64_t> beam(g.max_batch);
      for (auto& i : beam) i = uniform(0, g.max_batch - 1);
      paged->reorder(beam);
      contiguous->reorder(beam);
    } else {
      const int64_t seq = uniform(0, g.max_batch - 1);
      const int64_t keep = uniform(0, std::max<int64_t>(paged->length(seq), 1));
      paged->truncate(keep, seq);
      contiguous->truncate(keep, seq);
    }
    if (step % 25 == 0) same_tokens("step " + std::to_string(step));
  }
  same_tokens("the end");
  paged->reset();
  CHECK(paged->pool_stats().used == 0);
}

TEST_CASE("a row range of the paged KIVI cache on the GPU attends and stores like the whole batch",
          "[gpu][kivi][paged]") {
  // What the server's prefill passes do (CacheRows): chunk attention over a range's narrowed view
  // (residual windows and block table rows of its slots), then the range's append.
  const at::ScalarType dtype = GENERATE(at::kHalf, at::kBFloat16);
  INFO(c10::toString(dtype));
  KiviOptions options;
  options.k_bits = options.v_bits = 2;
  options.group_size = 32;
  options.residual_length = 128;
  options.page_tokens = 128;
  const KiviCacheFactory factory(options);
  CacheGeometry g = test::conformance_geometry(dtype, 0);
  g.head_dim = 128;
  g.max_batch = 5;
  g.device = kGpu;
  auto whole = factory.create(g);
  g.pool_pages = 5 * 2400 / 128;
  auto ranged = factory.create(g);

  std::mt19937 rng(11);
  at::manual_seed(11);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  const auto kv = at::TensorOptions().dtype(dtype).device(kGpu);
  const AttentionParams params{1.0 / std::sqrt(static_cast<double>(g.head_dim)), 0, {}};
  std::vector<int64_t> counts(g.max_batch);
  for (auto& c : counts) c = uniform(0, 700);
  const int64_t longest = *std::max_element(counts.begin(), counts.end());
  for (int64_t layer = 0; layer < g.num_layers; ++layer) {
    const at::Tensor k = at::randn({g.max_batch, g.num_kv_heads, longest, g.head_dim}, kv);
    const at::Tensor v = at::randn({g.max_batch, g.num_kv_heads, longest, g.head_dim}, kv);
    whole->append(layer, k, v, counts);
    ranged->append(layer, k, v, counts);
  }
  for (int round = 0; round < 40; ++round) {
    const int64_t first = uniform(0, g.max_batch - 1), n = uniform(1, g.max_batch - first);
    const int64_t tokens = uniform(2, 300);
    INFO("round " << round << ": rows [" << first << ", " << first + n << ") x " << tokens);
    std::vector<int64_t> all(g.max_batch, 0), some(n, tokens);
    std::fill(all.begin() + first, all.begin() + first + n, tokens);
    CacheRows rows(*ranged, first, n);
    for (int64_t layer = 0; layer < g.num_layers; ++layer) {
      const at::Tensor q = at::randn({g.max_batch, 8, tokens, g.head_dim}, kv);
      const at::Tensor k = at::randn({g.max_batch, g.num_kv_heads, tokens, g.head_dim}, kv);
      const at::Tensor v = at::randn({g.max_batch, g.num_kv_heads, tokens, g.head_dim}, kv);
      const CacheView a = rows.view(layer), b = whole->view(layer);
      std::string why_a, why_b;
      const auto out_a =
          cuda_chunk_attention(q.narrow(0, first, n), k.narrow(0, first, n), v.narrow(0, first, n),
                               kivi_parts(a), a.lengths, some, params, &why_a);
      const auto out_b =
          cuda_chunk_attention(q, k, v, kivi_parts(b), b.lengths, all, params, &why_b);
      INFO("layer " << layer << ": " << why_a << " / " << why_b);
      REQUIRE(out_a.has_value() == out_b.has_value());
      if (out_a) {
        // The same rows; a kernel may split the work by the batch's size, so up to rounding.
        const at::Tensor diff = (out_a->to(at::kFloat) - out_b->narrow(0, first, n).to(at::kFloat));
        CHECK(diff.abs().max().item<double>() <= 2e-2 * out_b->abs().max().item<double>());
      }
      rows.append(layer, k.narrow(0, first, n), v.narrow(0, first, n), some);
      whole->append(layer, k, v, all);
    }
    for (int64_t layer = 0; layer < g.num_layers; ++layer)
      REQUIRE(test::view_error(*ranged, *whole, layer, 1.0) == 0);
    if (round % 4 == 3) {  // a decode step of the whole batch between prefill passes
      for (int64_t layer = 0; layer < g.num_layers; ++layer) {
        const at::Tensor k = at::randn({g.max_batch, g.num_kv_heads, 1, g.head_dim}, kv);
        const at::Tensor v = at::randn({g.max_batch, g.num_kv_heads, 1, g.head_dim}, kv);
        whole->append(layer, k, v);
        ranged->append(layer, k, v);
      }
    }
  }
  ranged->reset();
  CHECK(ranged->pool_stats().used == 0);
}
