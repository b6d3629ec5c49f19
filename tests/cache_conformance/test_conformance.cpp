// Every KVCache through one suite: the fp caches exactly, kivi exactly at 16 bits and within
// its quantization bound. A code is at most half a step off (step = group range / (2^bits - 1),
// at most 8 / (2^bits - 1) here); keys that a truncate inside a group dequantized back into the
// residual are quantized again at the next flush, possibly on another grid: two half steps.
#include "cache_conformance.h"
#include "fp_cache_factory.h"
#include "kivi_cache.h"

namespace {

using kivi::test::fp_cache_factory;

kivi::kivi_cache::KiviCacheFactory kivi_factory(int64_t bits) {
  kivi::kivi_cache::KiviOptions options;
  options.k_bits = options.v_bits = bits;
  options.group_size = 32;
  options.residual_length = 64;
  options.chunk_tokens = 48;
  return kivi::kivi_cache::KiviCacheFactory(options);
}

}  // namespace

TEST_CASE("fp32 cache conforms", "[conformance]") {
  kivi::test::run_cache_conformance(*fp_cache_factory("fp32"), *fp_cache_factory("fp32"),
                                    at::kFloat, 0);
}
TEST_CASE("fp16 cache conforms", "[conformance]") {
  kivi::test::run_cache_conformance(*fp_cache_factory("fp16"), *fp_cache_factory("fp32"), at::kHalf,
                                    0);
}
TEST_CASE("bf16 cache conforms", "[conformance]") {
  kivi::test::run_cache_conformance(*fp_cache_factory("bf16"), *fp_cache_factory("fp32"),
                                    at::kBFloat16, 0);
}
TEST_CASE("kivi 16-bit cache conforms exactly", "[conformance]") {
  kivi::test::run_cache_conformance(kivi_factory(16), *fp_cache_factory("fp32"), at::kFloat, 0);
}
TEST_CASE("kivi 8-bit cache conforms", "[conformance]") {
  kivi::test::run_cache_conformance(kivi_factory(8), *fp_cache_factory("fp32"), at::kFloat,
                                    1.0 / 255 + 1e-6);
}
TEST_CASE("kivi 4-bit cache conforms", "[conformance]") {
  kivi::test::run_cache_conformance(kivi_factory(4), *fp_cache_factory("fp32"), at::kFloat,
                                    1.0 / 15 + 1e-6);
}
TEST_CASE("kivi 2-bit cache conforms", "[conformance]") {
  kivi::test::run_cache_conformance(kivi_factory(2), *fp_cache_factory("fp32"), at::kFloat,
                                    1.0 / 3 + 1e-6);
}
TEST_CASE("kivi 4-bit cache in fp16 conforms", "[conformance]") {
  kivi::test::run_cache_conformance(kivi_factory(4), *fp_cache_factory("fp32"), at::kHalf,
                                    1.0 / 15 + 2e-3);
}
TEST_CASE("kivi 4-bit cache in bf16 conforms", "[conformance]") {
  kivi::test::run_cache_conformance(kivi_factory(4), *fp_cache_factory("fp32"), at::kBFloat16,
                                    1.0 / 15 + 1e-2);
}

// ---- Paged storage: the same cache with its packed parts in a page pool ----------------------

namespace {

kivi::kivi_cache::KiviCacheFactory paged_kivi_factory(int64_t bits, int64_t page_tokens) {
  kivi::kivi_cache::KiviOptions options;
  options.k_bits = options.v_bits = bits;
  options.group_size = 32;
  options.residual_length = 64;
  options.chunk_tokens = 48;
  options.page_tokens = page_tokens;
  return kivi::kivi_cache::KiviCacheFactory(options);
}

// Histories reach ~2,600 tokens per row at worst; a row holds a page more while it copies one.
constexpr int64_t kPoolTokens = 3 * 2700;

}  // namespace

// Pages smaller than a key flush (R = 64 over two pages), equal to it, and holding two flushes.
TEST_CASE("paged kivi 2-bit cache (32-token pages) equals the contiguous one", "[conformance]") {
  kivi::test::run_paged_conformance(paged_kivi_factory(2, 32), at::kFloat, kPoolTokens / 32);
}
TEST_CASE("paged kivi 4-bit bf16 cache (64-token pages) equals the contiguous one",
          "[conformance]") {
  kivi::test::run_paged_conformance(paged_kivi_factory(4, 64), at::kBFloat16, kPoolTokens / 64);
}
TEST_CASE("paged kivi 8-bit fp16 cache (128-token pages) equals the contiguous one",
          "[conformance]") {
  kivi::test::run_paged_conformance(paged_kivi_factory(8, 128), at::kHalf, kPoolTokens / 128);
}

TEST_CASE("a paged kivi cache forks by sharing pages and copies only the one it writes",
          "[conformance]") {
  const auto factory = paged_kivi_factory(2, 32);
  kivi::CacheGeometry g = kivi::test::conformance_geometry(at::kFloat, 0);
  g.pool_pages = 64;
  auto cache = factory.create(g);
  auto reference = factory.create(kivi::test::conformance_geometry(at::kFloat, 0));
  auto append = [&](int64_t tokens, const std::vector<int64_t>& counts) {
    for (int64_t layer = 0; layer < g.num_layers; ++layer) {
      const at::Tensor k = at::randn({g.max_batch, g.num_kv_heads, tokens, g.head_dim});
      const at::Tensor v = at::randn({g.max_batch, g.num_kv_heads, tokens, g.head_dim});
      cache->append(layer, k, v, counts);
      reference->append(layer, k, v, counts);
    }
  };
  // A prompt of 300 tokens in row 0: keys quantized up to 256, values up to 236, 8 pages.
  append(300, {300, 0, 0});
  REQUIRE(cache->pool_stats().used == 8);
  // Beam search's first step: every row takes row 0. Nothing is copied but the windows.
  const std::vector<int64_t> beams = {0, 0, 0};
  cache->reorder(beams);
  reference->reorder(beams);
  CHECK(cache->pool_stats().used == 8);
  CHECK(cache->pool_stats().shared == 8);
  // Decode steps write values into page 7 (positions 224..255): each row but the last to write
  // copies it, the rest stay shared.
  for (int step = 0; step < 3; ++step) append(1, {1, 1, 1});
  CHECK(cache->pool_stats().used == 10);
  CHECK(cache->pool_stats().shared == 7);
  for (int64_t layer = 0; layer < g.num_layers; ++layer)
    CHECK(kivi::test::view_error(*cache, *reference, layer, 1.0) == 0);
  cache->reset();
  CHECK(cache->pool_stats().used == 0);
}

TEST_CASE("a paged kivi cache out of pages says so and loses nothing", "[conformance]") {
  const auto factory = paged_kivi_factory(2, 32);
  kivi::CacheGeometry g = kivi::test::conformance_geometry(at::kFloat, 0);
  g.pool_pages = 4;  // 128 quantized positions in all
  auto cache = factory.create(g);
  auto prompt = [&](const std::vector<int64_t>& counts) {
    const int64_t tokens = *std::max_element(counts.begin(), counts.end());
    const at::Tensor k = at::randn({g.max_batch, g.num_kv_heads, tokens, g.head_dim});
    for (int64_t layer = 0; layer < g.num_layers; ++layer) cache->append(layer, k, k, counts);
  };
  // 192 tokens quantize 192 keys (R = 64): 6 pages.
  CHECK_THROWS_WITH(prompt({192, 0, 0}), Catch::Matchers::Contains("page pool is exhausted"));
  CHECK(cache->length(0) == 0);
  cache->reset();
  CHECK(cache->pool_stats().used == 0);
  // 100 tokens quantize 64 keys and 36 values: 2 pages a row, so the third row does not fit.
  prompt({100, 0, 0});
  prompt({0, 100, 0});
  CHECK(cache->pool_stats().used == 4);
  const kivi::DenseKV before = cache->view(1).expand();
  CHECK_THROWS_WITH(prompt({0, 0, 100}), Catch::Matchers::Contains("page pool is exhausted"));
  CHECK(cache->length(0) == 100);
  CHECK(cache->length(1) == 100);
  CHECK(cache->length(2) == 0);
  const kivi::DenseKV after = cache->view(1).expand();
  CHECK(at::equal(after.k, before.k));
  CHECK(at::equal(after.v, before.v));
}

TEST_CASE("row ranges outside the slots, and range appends of the wrong shape, are clear errors",
          "[conformance]") {
  using Catch::Matchers::Contains;
  const kivi::CacheGeometry g = kivi::test::conformance_geometry(at::kFloat, 0);  // 3 slots
  auto fp = fp_cache_factory("fp32")->create(g);
  auto kivi = kivi_factory(4).create(g);
  for (kivi::KVCache* cache : {fp.get(), kivi.get()}) {
    CHECK_THROWS_WITH(kivi::CacheRows(*cache, 2, 2),
                      Contains("rows [2, 4) are not a range of the cache's 3 slots"));
    CHECK_THROWS_WITH(kivi::CacheRows(*cache, -1, 1), Contains("rows [-1, 0)"));
    kivi::CacheRows rows(*cache, 1, 2);
    // A k of the whole batch into a range of 2 rows: the shape error names the 2 rows.
    const at::Tensor k = at::zeros({3, g.num_kv_heads, 4, g.head_dim});
    CHECK_THROWS_WITH(rows.append(0, k, k), Contains("rows [1, 4) are not a range"));
    const at::Tensor flat = at::zeros({2, 4});
    CHECK_THROWS_WITH(rows.append(0, flat, flat), Contains("expected [2, 2, new_tokens, 64]"));
    CHECK_THROWS_WITH(rows.truncate(0, 0), Contains("belongs to the whole cache"));
    for (int64_t b = 0; b < g.max_batch; ++b) CHECK(cache->length(b) == 0);  // nothing stored
  }
}
