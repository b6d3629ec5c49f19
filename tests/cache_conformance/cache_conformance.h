// The KVCache conformance suite: one set of checks that every "kv_cache" plugin passes.
// A random history of appends (right-padded rows with per-row counts), single-token decode
// steps, beam reorders and truncates is played on the cache under test and on an oracle (the
// fp32 cache); after every step the cache's view, expanded to dense K/V, must match the
// oracle within `tolerance` (0 = bit-exact), measured as max |error| / (max - min of the data).
// A cache that serves row ranges also takes appends over a range of its rows (CacheRows), which
// must store what the whole batch's append with zero counts elsewhere stores.
// Also: reorder permutes exactly what expand shows, memory().total() equals the bytes of
// owned_tensors(), a cache preallocated for M tokens holds max_batch * bytes_per_sequence(M),
// max_tokens is enforced and reset() empties every sequence.
//
// Use from a Catch2 test case: kivi::test::run_cache_conformance(factory, oracle, dtype, tol).
#pragma once

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include "kivi_catch.h"

#include "kivi/cache/cache_rows.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/util/error.h"

namespace kivi::test {

inline CacheGeometry conformance_geometry(at::ScalarType dtype, int64_t max_tokens) {
  CacheGeometry g;
  g.num_layers = 2;
  g.num_kv_heads = 2;
  g.head_dim = 64;
  g.max_batch = 3;
  g.max_tokens = max_tokens;
  g.dtype = dtype;
  return g;
}

// Max |a - b| over the valid tokens of every row, relative to `range`.
inline double view_error(KVCache& cache, KVCache& oracle, int64_t layer, double range) {
  const DenseKV a = cache.view(layer).expand();
  const DenseKV b = oracle.view(layer).expand();
  REQUIRE(a.lengths == b.lengths);
  double worst = 0;
  for (size_t row = 0; row < a.lengths.size(); ++row) {
    const int64_t n = a.lengths[row];
    if (n == 0) continue;
    for (auto [x, y] : {std::pair{&a.k, &b.k}, std::pair{&a.v, &b.v}}) {
      const at::Tensor diff =
          ((*x)[row].narrow(1, 0, n).to(at::kDouble) - (*y)[row].narrow(1, 0, n).to(at::kDouble))
              .abs();
      worst = std::max(worst, diff.max().item<double>() / range);
    }
  }
  return worst;
}

inline int64_t owned_bytes(const KVCache& cache) {
  int64_t total = 0;
  for (const auto& [name, t] : cache.owned_tensors()) total += static_cast<int64_t>(t.nbytes());
  return total;
}

inline void check_memory(const KVCache& cache) {
  const MemoryStats stats = cache.memory();
  CHECK(stats.total() == owned_bytes(cache));
  int64_t tokens = 0;
  for (int64_t b = 0; b < cache.geometry().max_batch; ++b) tokens += cache.length(b);
  CHECK(stats.tokens == tokens);
  CHECK(stats.quantized_tokens + stats.residual_tokens == stats.tokens);
}

// Plays one random history on `cache` and `oracle` (same geometry but the oracle's dtype).
inline void play_history(KVCache& cache, KVCache& oracle, at::ScalarType dtype, double tolerance,
                         uint32_t seed) {
  const CacheGeometry& g = cache.geometry();
  std::mt19937 rng(seed);
  at::manual_seed(seed);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  const double range = 8.0;  // data lies in [-4, 4]
  auto append_all = [&](int64_t tokens, const std::vector<int64_t>& counts) {
    for (int64_t layer = 0; layer < g.num_layers; ++layer) {
      const std::vector<int64_t> shape = {g.max_batch, g.num_kv_heads, tokens, g.head_dim};
      // Rounded through the cache dtype so both caches receive the same numbers.
      const at::Tensor k = at::randn(shape).clamp_(-4, 4).to(dtype);
      const at::Tensor v = at::randn(shape).clamp_(-4, 4).to(dtype);
      cache.append(layer, k, v, counts);
      const at::ScalarType oracle_dtype = oracle.geometry().dtype;
      oracle.append(layer, k.to(oracle_dtype), v.to(oracle_dtype), counts);
    }
  };
  auto compare = [&](const std::string& step) {
    INFO("seed " << seed << ", after " << step);
    for (int64_t b = 0; b < g.max_batch; ++b) REQUIRE(cache.length(b) == oracle.length(b));
    for (int64_t layer = 0; layer < g.num_layers; ++layer) {
      const double error = view_error(cache, oracle, layer, range);
      if (tolerance == 0) {
        REQUIRE(error == 0);
      } else {
        REQUIRE(error <= tolerance);
      }
    }
    check_memory(cache);
  };

  // A right-padded batch of prompts of different lengths (one row may be empty).
  std::vector<int64_t> counts(g.max_batch);
  int64_t longest = 0;
  for (auto& c : counts) longest = std::max(longest, c = uniform(0, 150));
  append_all(longest, counts);
  compare("prompt");
  for (int step = 0; step < 60; ++step) {
    const int64_t op = uniform(0, 10);
    if (op < 6) {
      std::vector<int64_t> decode(g.max_batch);
      for (auto& c : decode) c = uniform(0, 4) == 0 ? 0 : 1;  // some rows sit out a step
      append_all(1, decode);
      compare("decode step");
    } else if (op < 7) {
      const int64_t tokens = uniform(2, 40);
      append_all(tokens, std::vector<int64_t>(g.max_batch, tokens));
      compare("chunk of " + std::to_string(tokens));
    } else if (op < 8 && cache.serves_row_ranges()) {
      // Rows [first, first + n) alone (a scheduler's prefill pass), against the whole batch with
      // nothing for the other rows.
      const int64_t first = uniform(0, g.max_batch - 1), n = uniform(1, g.max_batch - first);
      const int64_t tokens = uniform(1, 40);
      std::vector<int64_t> counts(g.max_batch, 0), range_counts(n);
      for (int64_t r = 0; r < n; ++r) counts[first + r] = range_counts[r] = uniform(0, tokens);
      CacheRows rows(cache, first, n);
      REQUIRE(rows.geometry().max_batch == n);
      for (int64_t layer = 0; layer < g.num_layers; ++layer) {
        const std::vector<int64_t> shape = {g.max_batch, g.num_kv_heads, tokens, g.head_dim};
        const at::Tensor k = at::randn(shape).clamp_(-4, 4).to(dtype);
        const at::Tensor v = at::randn(shape).clamp_(-4, 4).to(dtype);
        rows.append(layer, k.narrow(0, first, n), v.narrow(0, first, n), range_counts);
        const at::ScalarType oracle_dtype = oracle.geometry().dtype;
        oracle.append(layer, k.to(oracle_dtype), v.to(oracle_dtype), counts);
      }
      compare("rows [" + std::to_string(first) + ", " + std::to_string(first + n) + ") fed " +
              std::to_string(tokens));
      // The range's view is the whole view's rows.
      for (int64_t layer = 0; layer < g.num_layers; ++layer) {
        const DenseKV part = rows.view(layer).expand(), whole = cache.view(layer).expand();
        for (int64_t r = 0; r < n; ++r) {
          REQUIRE(rows.length(r) == cache.length(first + r));
          const int64_t length = part.lengths[r];
          REQUIRE(length == whole.lengths[first + r]);
          REQUIRE(
              at::equal(part.k[r].narrow(1, 0, length), whole.k[first + r].narrow(1, 0, length)));
          REQUIRE(
              at::equal(part.v[r].narrow(1, 0, length), whole.v[first + r].narrow(1, 0, length)));
        }
      }
    } else if (op < 10) {
      std::vector<int64_t> beam(g.max_batch);
      for (auto& i : beam) i = uniform(0, g.max_batch - 1);
      // Exactly a permutation of what expand showed.
      std::vector<DenseKV> before;
      for (int64_t layer = 0; layer < g.num_layers; ++layer)
        before.push_back(cache.view(layer).expand());
      cache.reorder(beam);
      oracle.reorder(beam);
      const at::Tensor index = at::tensor(beam, at::kLong);
      for (int64_t layer = 0; layer < g.num_layers; ++layer) {
        const DenseKV after = cache.view(layer).expand();
        for (int64_t b = 0; b < g.max_batch; ++b) {
          const int64_t n = after.lengths[b];
          REQUIRE(n == before[layer].lengths[beam[b]]);
          REQUIRE(at::equal(after.k[b].narrow(1, 0, n), before[layer].k[beam[b]].narrow(1, 0, n)));
          REQUIRE(at::equal(after.v[b].narrow(1, 0, n), before[layer].v[beam[b]].narrow(1, 0, n)));
        }
      }
      compare("reorder");
    } else {
      const int64_t seq = uniform(-1, g.max_batch - 1);
      const int64_t length = cache.length(std::max<int64_t>(seq, 0));
      const int64_t keep = uniform(0, std::max<int64_t>(length, 1));
      cache.truncate(keep, seq);
      oracle.truncate(keep, seq);
      compare("truncate to " + std::to_string(keep) + " of sequence " + std::to_string(seq));
    }
  }
  cache.reset();
  for (int64_t b = 0; b < g.max_batch; ++b) CHECK(cache.length(b) == 0);
  CHECK(cache.memory().tokens == 0);
  CHECK(cache.pool_stats().used == 0);  // a paged cache gave every page back
}

inline void run_cache_conformance(const KVCacheFactory& factory, const KVCacheFactory& oracle,
                                  at::ScalarType dtype, double tolerance) {
  SECTION("random histories match the oracle") {
    for (int64_t max_tokens : {int64_t{0}, int64_t{600}}) {
      INFO("max_tokens " << max_tokens);
      const CacheGeometry g = conformance_geometry(dtype, max_tokens);
      CacheGeometry og = g;
      og.dtype = at::kFloat;
      for (uint32_t seed : {1u, 2u, 3u}) {
        auto cache = factory.create(g);
        auto reference = oracle.create(og);
        play_history(*cache, *reference, dtype, tolerance, seed);
      }
    }
  }
  SECTION("preallocated bytes equal the spec") {
    for (int64_t tokens : {1, 31, 32, 33, 127, 128, 129, 300, 1000}) {
      const CacheGeometry g = conformance_geometry(dtype, tokens);
      auto cache = factory.create(g);
      INFO("tokens " << tokens);
      CHECK(cache->memory().total() == g.max_batch * factory.spec(g).bytes_per_sequence(tokens));
      CHECK(cache->memory().total() == owned_bytes(*cache));
    }
  }
  SECTION("max_tokens is enforced") {
    const CacheGeometry g = conformance_geometry(dtype, 40);
    auto cache = factory.create(g);
    const at::Tensor k = at::zeros({g.max_batch, g.num_kv_heads, 41, g.head_dim}, dtype);
    CHECK_THROWS_AS(cache->append(0, k, k), kivi::Error);
  }
}

// A paged cache (geometry.pool_pages = pool_pages) against the contiguous cache of the same
// factory: bit-identical views after every step of the random histories (forks by reorder share
// pages and copy them on write; truncates give pages back), the bytes the spec promises, and
// every page back in the pool after reset. The pool must hold what the histories need.
inline void run_paged_conformance(const KVCacheFactory& factory, at::ScalarType dtype,
                                  int64_t pool_pages) {
  SECTION("random histories match the contiguous cache bit for bit") {
    for (int64_t max_tokens : {int64_t{0}, int64_t{600}}) {
      INFO("max_tokens " << max_tokens);
      const CacheGeometry contiguous = conformance_geometry(dtype, max_tokens);
      CacheGeometry paged = contiguous;
      paged.pool_pages = pool_pages;
      for (uint32_t seed : {1u, 2u, 3u, 4u, 5u}) {
        auto cache = factory.create(paged);
        auto reference = factory.create(contiguous);
        REQUIRE(cache->pool_stats().pages == pool_pages);
        play_history(*cache, *reference, dtype, 0, seed);
      }
    }
  }
  SECTION("held bytes equal the spec") {
    for (int64_t tokens : {0, 31, 128, 600}) {
      CacheGeometry g = conformance_geometry(dtype, tokens);
      g.pool_pages = pool_pages;
      auto cache = factory.create(g);
      const CacheSpec spec = factory.spec(g);
      INFO("max_tokens " << tokens);
      CHECK(spec.bytes_per_page > 0);
      CHECK(cache->memory().total() ==
            pool_pages * spec.bytes_per_page + g.max_batch * spec.bytes_per_slot);
      CHECK(cache->memory().total() == owned_bytes(*cache));
    }
  }
  SECTION("max_tokens is enforced") {
    CacheGeometry g = conformance_geometry(dtype, 40);
    g.pool_pages = pool_pages;
    auto cache = factory.create(g);
    const at::Tensor k = at::zeros({g.max_batch, g.num_kv_heads, 41, g.head_dim}, dtype);
    CHECK_THROWS_AS(cache->append(0, k, k), kivi::Error);
  }
}

}  // namespace kivi::test
