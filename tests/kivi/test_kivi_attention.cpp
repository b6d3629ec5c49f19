// The "kivi" attention backend against plain softmax attention: prefill over the prompt's own
// K/V, decode over a KIVI view (several new tokens, per-row counts, GQA, blocks smaller than
// the cache) and over a dense view, with and without a sliding window.
#include <limits>

#include "kivi_catch.h"

#include "kivi/plugin/plugin.h"
#include "kivi_attention.h"
#include "kivi_test_support.h"

KIVI_DECLARE_PLUGIN(kivi_fp_cache);

namespace {

using namespace kivi;

// q [Hq, T, D] at positions first.., over k, v [H, S, D]; float64 reference.
at::Tensor naive(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t first,
                 const AttentionParams& p) {
  const int64_t rep = q.size(0) / k.size(0);
  const at::Tensor kk = k.to(at::kDouble).repeat_interleave(rep, 0);
  const at::Tensor vv = v.to(at::kDouble).repeat_interleave(rep, 0);
  at::Tensor scores = at::matmul(q.to(at::kDouble), kk.transpose(1, 2)) * p.scale;  // [Hq, T, S]
  const at::Tensor qp = at::arange(q.size(1), at::kLong).add_(first).unsqueeze(1);
  const at::Tensor kp = at::arange(k.size(1), at::kLong).unsqueeze(0);
  at::Tensor hidden = kp > qp;
  if (p.sliding_window > 0) hidden.logical_or_(kp <= qp - p.sliding_window);
  scores.masked_fill_(hidden, -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(scores, -1), vv);
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// How far float32 attention may sit from the float64 reference: a score s is rounded to about
// eps*|s| (the dot product, then the scale), which moves exp(s) by that much relative, and the
// output, a weighted mean of values, moves by at most that times max|v|; a few eps more come
// from the running softmax sums. The bound follows the data, not one summation order: libtorch's
// float32 matmul does not always sum in the same order (the first call of a process on a busy
// machine took another path, 1.2e-5 from the reference where 2.6e-7 is usual), so a fixed 1e-5
// failed one CI run in ~50. A masking or dequantization slip moves the output by the weight of a
// whole token, orders of magnitude above this bound.
double float32_tolerance(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const AttentionParams& p) {
  const double eps = std::numeric_limits<float>::epsilon();
  const int64_t rep = q.size(0) / k.size(0);
  const at::Tensor scores =
      at::matmul(q.to(at::kDouble), k.to(at::kDouble).repeat_interleave(rep, 0).transpose(1, 2));
  const double max_score = scores.abs().max().item<double>() * p.scale;
  const double max_value = v.abs().max().item<double>();
  return 16 * eps * (4 + max_score) * max_value;
}

// out [Hq, T, D] against the float64 reference, as a fraction of the float32 tolerance (< 1
// passes).
double relative_error(const at::Tensor& out, const at::Tensor& q, const at::Tensor& k,
                      const at::Tensor& v, int64_t first, const AttentionParams& p) {
  return max_diff(out, naive(q, k, v, first, p)) / float32_tolerance(q, k, v, p);
}

}  // namespace

TEST_CASE("prefill is causal attention over the prompt's own K/V", "[kivi][attention]") {
  at::manual_seed(1);
  const kivi_cache::KiviAttention attention(4);  // several blocks
  const at::Tensor q = at::randn({3, 4, 9, 32}), k = at::randn({3, 2, 9, 32}),
                   v = at::randn({3, 2, 9, 32});
  const std::vector<int64_t> counts = {9, 0, 5};
  for (int64_t window : {0, 3}) {
    AttentionParams p{1.0 / std::sqrt(32.0), window, {}};
    const at::Tensor out = attention.prefill(q, k, v, counts, p);
    for (int64_t b = 0; b < 3; ++b) {
      const int64_t n = counts[b];
      if (n < 9)
        CHECK(out[b].narrow(1, n, 9 - n).abs().max().item<double>() == 0);  // padding: zero
      if (n == 0) continue;
      CHECK(relative_error(out[b].narrow(1, 0, n), q[b].narrow(1, 0, n), k[b].narrow(1, 0, n),
                           v[b].narrow(1, 0, n), 0, p) < 1);
    }
  }
}

TEST_CASE("decode over a KIVI view equals attention over its expansion", "[kivi][attention]") {
  at::manual_seed(2);
  for (int64_t bits : {2, 4, 16}) {
    INFO(bits << " bits");
    kivi_cache::KiviCache cache(kivi::test::small_geometry(3),
                                kivi::test::small_options(bits, bits));
    cache.append(0, at::randn({3, 2, 150, 32}), at::randn({3, 2, 150, 32}),
                 std::vector<int64_t>{150, 70, 1});
    cache.append(0, at::randn({3, 2, 1, 32}), at::randn({3, 2, 1, 32}));  // a pending flush
    const std::vector<int64_t> counts = {3, 1, 2};
    cache.append(0, at::randn({3, 2, 3, 32}), at::randn({3, 2, 3, 32}), counts);
    const CacheView view = cache.view(0);
    const DenseKV dense = view.expand();
    const at::Tensor q = at::randn({3, 4, 3, 32});
    for (int64_t window : {0, 40}) {
      AttentionParams p{1.0 / std::sqrt(32.0), window, {}};
      for (int64_t block : {16, 48, 1000}) {
        const at::Tensor out = kivi_cache::KiviAttention(block).decode(q, view, counts, p);
        for (int64_t b = 0; b < 3; ++b) {
          const int64_t n = counts[b], length = view.lengths[b];
          CHECK(relative_error(out[b].narrow(1, 0, n), q[b].narrow(1, 0, n),
                               dense.k[b].narrow(1, 0, length), dense.v[b].narrow(1, 0, length),
                               length - n, p) < 1);
          if (n < 3) CHECK(out[b].narrow(1, n, 3 - n).abs().max().item<double>() == 0);
        }
      }
    }
  }
}

TEST_CASE("a chunk attends to the cache as stored and to its own K/V in full precision",
          "[kivi][attention]") {
  at::manual_seed(4);
  for (int64_t bits : {2, 4}) {
    INFO(bits << " bits");
    kivi_cache::KiviCache cache(kivi::test::small_geometry(3),
                                kivi::test::small_options(bits, bits));
    cache.append(0, at::randn({3, 2, 150, 32}), at::randn({3, 2, 150, 32}),
                 std::vector<int64_t>{150, 70, 0});
    const CacheView stored = cache.view(0);
    const DenseKV before = stored.expand();  // what the cache holds, dequantized, before the chunk
    const std::vector<int64_t> counts = {40, 3, 40};
    const at::Tensor k = at::randn({3, 2, 40, 32}), v = at::randn({3, 2, 40, 32});
    const at::Tensor q = at::randn({3, 4, 40, 32});
    for (int64_t window : {0, 50}) {
      AttentionParams p{1.0 / std::sqrt(32.0), window, {}};
      for (int64_t block : {16, 1000}) {
        const at::Tensor out = kivi_cache::KiviAttention(block).chunk(q, k, v, stored, counts, p);
        for (int64_t b = 0; b < 3; ++b) {
          const int64_t n = counts[b], first = stored.lengths[b];
          const at::Tensor keys =
              at::cat({before.k[b].narrow(1, 0, first), k[b].narrow(1, 0, n)}, 1);
          const at::Tensor values =
              at::cat({before.v[b].narrow(1, 0, first), v[b].narrow(1, 0, n)}, 1);
          CHECK(relative_error(out[b].narrow(1, 0, n), q[b].narrow(1, 0, n), keys, values, first,
                               p) < 1);
          if (n < 40) CHECK(out[b].narrow(1, n, 40 - n).abs().max().item<double>() == 0);
        }
      }
    }
    // Appending first quantizes some of the chunk's own tokens: reading after the append (the
    // old order) differs. (The stored view aliases the storage the append rewrites, so the
    // faithful result is taken before it.)
    const AttentionParams plain{1.0 / std::sqrt(32.0), 0, {}};
    const at::Tensor faithful =
        kivi_cache::KiviAttention(1000).chunk(q, k, v, stored, counts, plain);
    cache.append(0, k, v, counts);
    const at::Tensor after =
        kivi_cache::KiviAttention(1000).decode(q, cache.view(0), counts, plain);
    CHECK(max_diff(after[0], faithful[0]) > 1e-3);
  }
}

TEST_CASE("decode over a dense view works too", "[kivi][attention]") {
  at::manual_seed(3);
  const kivi_plugin_v1* plugin = kivi_plugin_descriptor_kivi_fp_cache();
  void* object = nullptr;
  char error[256] = {};
  REQUIRE(plugin->factories[2].create("", &object, error, sizeof error) == 0);  // fp32
  std::unique_ptr<KVCacheFactory> factory(static_cast<KVCacheFactory*>(object));
  auto cache = factory->create(kivi::test::small_geometry(2));
  cache->append(0, at::randn({2, 2, 40, 32}), at::randn({2, 2, 40, 32}),
                std::vector<int64_t>{40, 12});
  cache->append(0, at::randn({2, 2, 2, 32}), at::randn({2, 2, 2, 32}));
  const CacheView view = cache->view(0);
  const kivi_cache::KiviAttention attention(16);
  REQUIRE(attention.supports(kDenseFormat));
  REQUIRE(attention.supports(kivi_cache::kFormat));
  const at::Tensor q = at::randn({2, 4, 2, 32});
  AttentionParams p{0.2, 0, {}};
  const at::Tensor out = attention.decode(q, view, {}, p);
  for (int64_t b = 0; b < 2; ++b) {
    const int64_t length = view.lengths[b];
    CHECK(relative_error(out[b], q[b], view.dense.k[b].narrow(1, 0, length),
                         view.dense.v[b].narrow(1, 0, length), length - 2, p) < 1);
  }
}
