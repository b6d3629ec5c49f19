// The KIVI cache against the research code's rules: prompt split and decode flushes at every
// boundary, per-sequence groups in a padded batch, truncate, reorder and memory accounting.
#include "kivi_catch.h"

#include "kivi/cache/memory_table.h"
#include "kivi/plugin/plugin.h"
#include "kivi/util/error.h"
#include "kivi_test_support.h"

KIVI_DECLARE_PLUGIN(kivi_kivi_cache);

namespace {

using namespace kivi;
using namespace kivi::test;
using kivi_cache::KiviCache;
using kivi_cache::KiviOptions;

constexpr int64_t kGroup = 16, kResidual = 64;

at::Tensor tokens(int64_t batch, int64_t n, uint64_t seed) {
  at::manual_seed(seed);
  return at::randn({batch, 2, n, 32});
}

// The view of sequence b equals the research code's state `s` exactly.
void check_state(const KiviCache& cache, const KiviOptions& o, const at::Tensor& k,
                 const at::Tensor& v, const ResearchState& s, int64_t b = 0) {
  const CacheView view = cache.view(0);
  REQUIRE(view.format == kivi_cache::kFormat);
  REQUIRE(view.lengths[b] == s.length);
  REQUIRE(kivi_cache::kivi_parts(view).key_quantized[b] ==
          (o.quantize_keys() ? s.key_quantized : 0));
  REQUIRE(kivi_cache::kivi_parts(view).value_quantized[b] ==
          (o.quantize_values() ? s.value_quantized : 0));
  const auto [ek, ev] = expected_dense(k, v, o, kivi_cache::kivi_parts(view).key_quantized[b],
                                       kivi_cache::kivi_parts(view).value_quantized[b], s.length);
  const auto [ak, av] = expanded_row(cache, b);
  REQUIRE(at::equal(ak, ek));
  REQUIRE(at::equal(av, ev));
}

const std::vector<int64_t> kPromptLengths = {0,
                                             1,
                                             kGroup - 1,
                                             kGroup,
                                             kGroup + 1,
                                             kResidual - 1,
                                             kResidual,
                                             kResidual + 1,
                                             2 * kResidual - 1,
                                             2 * kResidual,
                                             2 * kResidual + 1,
                                             3 * kResidual + 5};

}  // namespace

TEST_CASE("prompt split and decode flushes follow the research code at every boundary", "[kivi]") {
  for (auto [kb, vb] : {std::pair<int64_t, int64_t>{2, 2}, {4, 8}, {8, 16}, {16, 4}}) {
    const KiviOptions o = small_options(kb, vb, kResidual);
    for (int64_t prompt : kPromptLengths) {
      INFO("k_bits " << kb << " v_bits " << vb << " prompt " << prompt);
      const int64_t steps = 2 * kResidual + 3;
      const at::Tensor k = tokens(1, prompt + steps, 7 + prompt),
                       v = tokens(1, prompt + steps, 99 + prompt);
      KiviCache cache(small_geometry(), o);
      cache.append(0, k.narrow(2, 0, prompt), v.narrow(2, 0, prompt));
      ResearchState state = after_prompt(prompt, kResidual);
      check_state(cache, o, k, v, state);
      for (int64_t t = 0; t < steps; ++t) {
        INFO("decode step " << t);
        cache.append(0, k.narrow(2, prompt + t, 1), v.narrow(2, prompt + t, 1));
        // During the step the research code attends over its state plus the new token.
        ResearchState during = state;
        during.length += 1;
        check_state(cache, o, k, v, during);
        state = after_step(state, kResidual);
      }
    }
  }
}

TEST_CASE("a chunk appended to a cache lands in the canonical split", "[kivi]") {
  const KiviOptions o = small_options(2, 4, kResidual);
  const at::Tensor k = tokens(1, 400, 3), v = tokens(1, 400, 4);
  KiviCache cache(small_geometry(), o);
  int64_t length = 0;
  for (int64_t chunk : {5, 70, 1, 64, 33, 1, 1, 100}) {
    cache.append(0, k.narrow(2, length, chunk), v.narrow(2, length, chunk));
    length += chunk;
    if (chunk == 1) continue;  // a single token defers its flush
    const kivi_cache::SequenceSplit split = kivi_cache::canonical_split(o, length);
    check_state(cache, o, k, v, {split.key_quantized, split.value_quantized, length});
  }
}

TEST_CASE("residual_length 0 quantizes keys a group at a time and values at once", "[kivi]") {
  const KiviOptions o = small_options(4, 2, 0);
  const at::Tensor k = tokens(1, 120, 5), v = tokens(1, 120, 6);
  KiviCache cache(small_geometry(), o);
  cache.append(0, k.narrow(2, 0, 37), v.narrow(2, 0, 37));
  check_state(cache, o, k, v, {32, 37, 37});  // keys' partial group stays in full precision
  for (int64_t length = 38; length <= 80; ++length) {
    cache.append(0, k.narrow(2, length - 1, 1), v.narrow(2, length - 1, 1));
    // The new token is in both windows during its step; the previous one is flushed.
    const int64_t previous = length - 1;
    check_state(cache, o, k, v, {previous / kGroup * kGroup, previous, length});
  }
}

TEST_CASE("a padded batch quantizes no padding: each row equals its own cache", "[kivi]") {
  const KiviOptions o = small_options(2, 2, kResidual);
  const std::vector<int64_t> lengths = {kResidual + 5, 3, 2 * kResidual};
  const int64_t longest = 2 * kResidual;
  at::Tensor k = tokens(3, longest + 10, 11), v = tokens(3, longest + 10, 12);
  // Padding full of huge values would wreck any group it entered.
  for (int64_t b = 0; b < 3; ++b) {
    k[b].narrow(1, lengths[b], longest - lengths[b]).fill_(1e6);
    v[b].narrow(1, lengths[b], longest - lengths[b]).fill_(-1e6);
  }
  KiviCache batch(small_geometry(3), o);
  batch.append(0, k.narrow(2, 0, longest), v.narrow(2, 0, longest), lengths);
  std::vector<std::unique_ptr<KiviCache>> single;
  for (int64_t b = 0; b < 3; ++b) {
    single.push_back(std::make_unique<KiviCache>(small_geometry(1), o));
    single[b]->append(0, k[b].unsqueeze(0).narrow(2, 0, lengths[b]),
                      v[b].unsqueeze(0).narrow(2, 0, lengths[b]));
  }
  std::vector<int64_t> length = lengths;
  for (int step = 0; step < 70; ++step) {
    const std::vector<int64_t> counts = {1, step % 3 == 0 ? 0 : 1, 1};
    const at::Tensor nk = at::randn({3, 2, 1, 32}), nv = at::randn({3, 2, 1, 32});
    batch.append(0, nk, nv, counts);
    for (int64_t b = 0; b < 3; ++b)
      if (counts[b] == 1) single[b]->append(0, nk[b].unsqueeze(0), nv[b].unsqueeze(0));
  }
  for (int64_t b = 0; b < 3; ++b) {
    INFO("row " << b);
    const auto [bk, bv] = expanded_row(batch, b);
    const auto [sk, sv] = expanded_row(*single[b], 0);
    REQUIRE(at::equal(bk, sk));
    REQUIRE(at::equal(bv, sv));
    CHECK(kivi_cache::kivi_parts(batch.view(0)).key_quantized[b] ==
          kivi_cache::kivi_parts(single[b]->view(0)).key_quantized[0]);
    CHECK(kivi_cache::kivi_parts(batch.view(0)).value_quantized[b] ==
          kivi_cache::kivi_parts(single[b]->view(0)).value_quantized[0]);
  }
}

TEST_CASE("truncate keeps the canonical split and invents nothing", "[kivi]") {
  const KiviOptions o = small_options(2, 4, kResidual);
  const int64_t total = 3 * kResidual + 20;
  const at::Tensor k = tokens(1, total + 30, 21), v = tokens(1, total + 30, 22);

  SECTION("dropping a pending decode token is exact") {
    KiviCache cache(small_geometry(), o), fresh(small_geometry(), o);
    cache.append(0, k.narrow(2, 0, total), v.narrow(2, 0, total));
    fresh.append(0, k.narrow(2, 0, total), v.narrow(2, 0, total));
    cache.append(0, k.narrow(2, total, 1), v.narrow(2, total, 1));
    cache.truncate(total);
    const auto [ak, av] = expanded_row(cache, 0);
    const auto [fk, fv] = expanded_row(fresh, 0);
    CHECK(at::equal(ak, fk));
    CHECK(at::equal(av, fv));
  }
  SECTION("anywhere, also inside a group") {
    for (int64_t keep : {int64_t{0}, int64_t{1}, kGroup - 1, kGroup, kGroup + 1, kResidual - 1,
                         kResidual, kResidual + 1, 2 * kResidual + 7, total - 1}) {
      INFO("keep " << keep);
      KiviCache cache(small_geometry(), o);
      cache.append(0, k.narrow(2, 0, total), v.narrow(2, 0, total));
      const auto [bk, bv] = expanded_row(cache, 0);
      cache.truncate(keep);
      REQUIRE(cache.length(0) == keep);
      const kivi_cache::SequenceSplit split = kivi_cache::canonical_split(o, keep);
      CHECK(kivi_cache::kivi_parts(cache.view(0)).key_quantized[0] == split.key_quantized);
      CHECK(kivi_cache::kivi_parts(cache.view(0)).value_quantized[0] == split.value_quantized);
      // What the view shows is what it showed before, cut: dequantized tails, not new values.
      const auto [ak, av] = expanded_row(cache, 0);
      CHECK(at::equal(ak, bk.narrow(2, 0, keep)));
      CHECK(at::equal(av, bv.narrow(2, 0, keep)));
      // And the cache goes on: a chunk and decode steps keep the canonical shape.
      cache.append(0, k.narrow(2, keep, 20), v.narrow(2, keep, 20));
      for (int i = 0; i < 10; ++i)
        cache.append(0, k.narrow(2, keep + 20 + i, 1), v.narrow(2, keep + 20 + i, 1));
      cache.truncate(keep + 30);  // settles nothing, drops nothing
      CHECK(cache.length(0) == keep + 30);
      const auto [ck, cv] = expanded_row(cache, 0);
      // Close to the originals: at most two half steps of 2 bits on data within +-5.
      CHECK((ck - k.narrow(2, 0, keep + 30)).abs().max().item<double>() < 10.0 / 3);
    }
  }
}

TEST_CASE("reorder moves codes, scales, minima, residuals and lengths", "[kivi]") {
  const KiviOptions o = small_options(4, 2, kResidual);
  KiviCache cache(small_geometry(3), o);
  const at::Tensor k = tokens(3, 150, 31), v = tokens(3, 150, 32);
  cache.append(0, k, v, std::vector<int64_t>{150, 20, 70});
  cache.append(0, k.narrow(2, 0, 1), v.narrow(2, 0, 1), std::vector<int64_t>{1, 1, 0});
  const DenseKV before = cache.view(0).expand();
  const CacheView old_view = cache.view(0);
  const std::vector<int64_t> beam = {2, 0, 0};
  cache.reorder(beam);
  const CacheView view = cache.view(0);
  const DenseKV after = view.expand();
  for (int64_t b = 0; b < 3; ++b) {
    CHECK(view.lengths[b] == old_view.lengths[beam[b]]);
    CHECK(kivi_cache::kivi_parts(view).key_quantized[b] ==
          kivi_cache::kivi_parts(old_view).key_quantized[beam[b]]);
    CHECK(kivi_cache::kivi_parts(view).value_quantized[b] ==
          kivi_cache::kivi_parts(old_view).value_quantized[beam[b]]);
    const int64_t n = view.lengths[b];
    CHECK(at::equal(after.k[b].narrow(1, 0, n), before.k[beam[b]].narrow(1, 0, n)));
    CHECK(at::equal(after.v[b].narrow(1, 0, n), before.v[beam[b]].narrow(1, 0, n)));
  }
  // The pending flush of row 0 (now rows 1 and 2) happens in each copy alike.
  const at::Tensor same = k[0].narrow(1, 0, 1).unsqueeze(0).expand({3, 2, 1, 32}).contiguous();
  cache.append(0, same, same);
  const DenseKV next = cache.view(0).expand();
  CHECK(at::equal(next.k[1], next.k[2]));
}

TEST_CASE("memory: exact bytes by component and token counts", "[kivi][memory]") {
  const KiviOptions o = small_options(2, 2, kResidual);
  const CacheGeometry g = small_geometry(1, 200);
  KiviCache cache(g, o);
  // 200 tokens: 3 key flushes of 64 = 12 groups of 16; 136 quantized values; windows 64 + 65.
  const MemoryStats empty = cache.memory();
  CHECK(empty.payload_bytes == 12 * 2 * 32 * 1 * 4 + 136 * 2 * 2 * 4);
  CHECK(empty.scale_bytes == 2 * 12 * 2 * 32 * 4 + 2 * 136 * 2 * 2 * 4);
  CHECK(empty.residual_bytes == (64 + 65) * 2 * 32 * 4);
  CHECK(empty.workspace_bytes == 0);
  CHECK(empty.total() == kivi_cache::KiviCacheFactory(o).spec(g).bytes_per_sequence(200));
  cache.append(0, tokens(1, 150, 1), tokens(1, 150, 2));
  const MemoryStats used = cache.memory();
  CHECK(used.total() == empty.total());  // preallocated: appends allocate nothing
  CHECK(used.tokens == 150);
  CHECK(used.quantized_tokens == 128);  // keys 128, values 86
  CHECK(used.residual_tokens == 22);
}

TEST_CASE("the memory table: the write-up's figures and the honest ones", "[kivi][memory]") {
  CacheGeometry g = small_geometry(1, 0, at::kHalf);
  g.num_layers = 32;
  g.num_kv_heads = 8;
  g.head_dim = 128;
  KiviOptions o;  // defaults: 2/2 bits, groups of 32, R = 128
  const CacheSpec spec = kivi_cache::KiviCacheFactory(o).spec(g);
  const std::vector<int64_t> lengths = {4096, 32768};
  const std::vector<MemoryTableRow> rows = memory_table(g, spec, lengths);
  REQUIRE(rows.size() == 2);
  // 4096 tokens: keys all quantized, values 3968; windows of 128 keys and 129 values.
  const int64_t per_head_layer = 4096 * (128 * 2 / 8 + 2 * 128 * 2 / 32) +
                                 3968 * (128 * 2 / 8 + 2 * (128 / 32) * 2) + (128 + 129) * 128 * 2;
  CHECK(rows[0].bytes == 32 * 8 * per_head_layer);
  CHECK(rows[0].fp16_bytes == 4096 * 131072);
  CHECK(rows[0].code_bits == 2.0);
  CHECK(rows[0].code_compression() == 8.0);
  CHECK(rows[0].bits == Approx(3.455).margin(1e-3));
  CHECK(rows[1].compression() == Approx(5.234).margin(1e-3));
  g.max_tokens = 4096;
  CHECK(KiviCache(g, o).memory().total() == rows[0].bytes);
  CHECK_THAT(format_memory_table(spec.description, rows), Catch::Contains("kivi k2/v2 g32 r128"));
}

TEST_CASE("grown storage never exceeds geometric chunks and counts what it holds",
          "[kivi][memory]") {
  const KiviOptions o = small_options(2, 2, kResidual);
  KiviCache cache(small_geometry(), o);
  for (int i = 0; i < 300; ++i) cache.append(0, tokens(1, 1, i), tokens(1, 1, i + 1000));
  int64_t owned = 0;
  for (const auto& [name, t] : cache.owned_tensors()) owned += static_cast<int64_t>(t.nbytes());
  CHECK(cache.memory().total() == owned);
  // Quantized parts hold at most twice what 300 tokens need (plus a chunk).
  const int64_t exact = kivi_cache::bytes_per_sequence(o, small_geometry(), 300);
  CHECK(cache.memory().total() <=
        2 * exact + kivi_cache::bytes_per_sequence(o, small_geometry(), 40));
}

TEST_CASE("options are checked with the option, the value and what was expected",
          "[kivi][options]") {
  const kivi_plugin_v1* plugin = kivi_plugin_descriptor_kivi_kivi_cache();
  auto create_error = [&](const std::string& options) -> std::string {
    for (uint32_t i = 0; i < plugin->factory_count; ++i) {
      const kivi_factory_v1& f = plugin->factories[i];
      if (std::string(f.kind) != "kv_cache") continue;
      void* object = nullptr;
      char error[1024] = {};
      if (f.create(options.c_str(), &object, error, sizeof error) == 0) {
        f.destroy(object);
        return "";
      }
      return error;
    }
    return "no kv_cache factory";
  };
  CHECK(create_error("") == "");
  CHECK(create_error("k_bits = 16\nv_bits = 8\ngroup_size = 64\nresidual_length = 0") == "");
  CHECK_THAT(create_error("k_bits = 3"), Catch::Contains("k_bits"));
  CHECK_THAT(create_error("residual_length = 100"),
             Catch::Contains("residual_length") && Catch::Contains("100"));
  CHECK_THAT(create_error("group_size = 24\nresidual_length = 96"),
             Catch::Contains("group_size") && Catch::Contains("16"));
  CHECK_THAT(create_error("bogus = 1"), Catch::Contains("bogus"));
  CacheGeometry g = small_geometry();
  g.head_dim = 40;
  CHECK_THROWS_WITH(KiviCache(g, small_options(2, 2)), Catch::Contains("head_dim = 40"));
}
