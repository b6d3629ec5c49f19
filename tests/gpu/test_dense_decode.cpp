// The split-K decode kernel over dense caches (plugins/attention/cuda/dense_decode.h) against
// a float64 softmax reference: rows of different lengths, idle rows, one and many splits, GQA
// ratios the kernel rounds up (3, 7), head_dim 64 and 128, a sliding window.
#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/ATen.h>

#include "backends.h"

#include "kivi_catch.h"  // last: keeps Catch's CHECK over c10's

using namespace kivi;

namespace {

// Row b's output in float64: softmax(q k^T * scale) v over keys [first, length).
at::Tensor reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::vector<int64_t>& lengths, const std::vector<int64_t>& counts,
                     double scale, int64_t window) {
  const int64_t batch = q.size(0), q_heads = q.size(1), kv_heads = k.size(1);
  at::Tensor out = at::zeros(q.sizes(), q.options().dtype(at::kDouble)).cpu();
  for (int64_t b = 0; b < batch; ++b) {
    if (counts[b] == 0) continue;
    const int64_t first = window > 0 ? std::max<int64_t>(0, lengths[b] - window) : 0;
    for (int64_t h = 0; h < q_heads; ++h) {
      const int64_t kvh = h / (q_heads / kv_heads);
      const at::Tensor keys = k[b][kvh].narrow(0, first, lengths[b] - first).to(at::kDouble).cpu();
      const at::Tensor values =
          v[b][kvh].narrow(0, first, lengths[b] - first).to(at::kDouble).cpu();
      const at::Tensor scores = at::matmul(keys, q[b][h][0].to(at::kDouble).cpu()) * scale;
      out[b][h][0].copy_(at::matmul(at::softmax(scores, 0), values));
    }
  }
  return out;
}

}  // namespace

TEST_CASE("dense decode kernel equals a float64 softmax", "[gpu][attention]") {
  const auto dtype = GENERATE(at::kHalf, at::kBFloat16);
  const int64_t dim = GENERATE(int64_t{64}, int64_t{128});
  const auto [q_heads, kv_heads] = GENERATE(
      values<std::pair<int64_t, int64_t>>({{4, 4}, {8, 4}, {12, 4}, {32, 8}, {14, 2}, {16, 2}}));
  const int64_t window = GENERATE(int64_t{0}, int64_t{300});
  INFO(c10::toString(dtype) << ", D " << dim << ", " << q_heads << "/" << kv_heads
                            << " heads, window " << window);
  at::manual_seed(5);
  const auto opts = at::TensorOptions().device(at::kCUDA).dtype(dtype);
  const std::vector<int64_t> lengths = {1, 100, 5000, 777, 0 + 300, 2049};
  const std::vector<int64_t> counts = {1, 1, 1, 0, 1, 1};
  const int64_t batch = static_cast<int64_t>(lengths.size()), capacity = 5120;
  const at::Tensor k = at::randn({batch, kv_heads, capacity, dim}, opts);
  const at::Tensor v = at::randn({batch, kv_heads, capacity, dim}, opts);
  const at::Tensor q = at::randn({batch, q_heads, 1, dim}, opts);
  CacheView view;
  view.lengths = lengths;
  view.dense = DenseKV{k, v, lengths};
  AttentionParams params;
  params.scale = 1.0 / std::sqrt(static_cast<double>(dim));
  params.sliding_window = window;
  std::string why;
  const auto got = attention::fused_dense_decode(q, view, counts, params, &why);
  INFO(why);
  REQUIRE(got.has_value());
  const at::Tensor want = reference(q, k, v, lengths, counts, params.scale, window);
  const double worst = (got->to(at::kDouble).cpu() - want).abs().max().item<double>();
  // Outputs are averages of N(0, 1) values: bounded by the storage type's rounding near 1.
  CHECK(worst <= (dtype == at::kHalf ? 2e-3 : 1.6e-2));
  // Idle rows are zeros.
  CHECK(got->select(0, 3).abs().max().item<double>() == 0);

  // A buffer passed in AttentionParams::out (as decode graphs do) is written and returned.
  AttentionParams into = params;
  into.out = at::full({batch, q_heads, 1, dim}, 7.0, opts);
  const auto written = attention::fused_dense_decode(q, view, counts, into, &why);
  REQUIRE(written.has_value());
  CHECK(written->is_same(into.out));
  CHECK(at::equal(*written, *got));
  // One that does not fit (another dtype) is left alone.
  AttentionParams mismatched = params;
  mismatched.out = at::zeros({batch, q_heads, 1, dim}, opts.dtype(at::kFloat));
  const auto fresh = attention::fused_dense_decode(q, view, counts, mismatched, &why);
  REQUIRE(fresh.has_value());
  CHECK_FALSE(fresh->is_same(mismatched.out));
  CHECK(mismatched.out.abs().max().item<double>() == 0);
}

TEST_CASE("dense decode kernel refuses what it does not serve", "[gpu][attention]") {
  const auto opts = at::TensorOptions().device(at::kCUDA).dtype(at::kHalf);
  CacheView view;
  view.lengths = {4};
  view.dense = DenseKV{at::randn({1, 2, 8, 96}, opts), at::randn({1, 2, 8, 96}, opts), {4}};
  AttentionParams params;
  std::string why;
  CHECK_FALSE(
      attention::fused_dense_decode(at::randn({1, 2, 1, 96}, opts), view, {}, params, &why));
  CHECK(why.find("head_dim 96") != std::string::npos);
  view.dense = DenseKV{at::randn({1, 2, 8, 64}, opts.dtype(at::kFloat)),
                       at::randn({1, 2, 8, 64}, opts.dtype(at::kFloat)),
                       {4}};
  CHECK_FALSE(attention::fused_dense_decode(at::randn({1, 2, 1, 64}, opts.dtype(at::kFloat)), view,
                                            {}, params, &why));
}
