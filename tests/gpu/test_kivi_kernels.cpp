// The KIVI cache's CUDA kernels against references, on fresh random data:
//   - the flush kernels (quantize + pack into the cache, in tile order) against the ATen
//     quantizer on the CPU;
//   - the fused decode attention (the tensor-core kernel and the CUDA-core one) against (a) the
//     plugin's blocked CPU attention over the same packed parts and (b) dequantize-then-attend
//     in float64, for 2/4/8/16 bits, head_dim 64
//     and 128, GQA ratios 1 to 8, fp16/bf16/fp32, a batch of different lengths with an idle row.
// Outputs are poisoned (NaN) before each run, so an element the kernel fails to write shows.
//
// Bounds on ||out - ref|| / ||ref|| (the output is rounded once to the storage dtype; the
// kernel accumulates in float32): fp16 2e-3, bf16 1e-2, fp32 2e-5.
#include <ATen/ATen.h>

#include <cmath>
#include <iostream>
#include <limits>
#include <vector>

#include "cuda_ops.h"
#include "kivi_attention.h"
#include "kivi_cache.h"
#include "kivi_read.h"
#include "quantize.h"
#include "tile_order.h"

#include "kivi_catch.h"  // last: keeps Catch's CHECK over c10's

using namespace kivi;
using namespace kivi::kivi_cache;

namespace {

const at::Device kGpu(at::kCUDA, 0);

double relative_bound(at::ScalarType dtype) {
  return dtype == at::kHalf ? 2e-3 : dtype == at::kBFloat16 ? 1e-2 : 2e-5;
}

double relative_error(const at::Tensor& out, const at::Tensor& ref) {
  const at::Tensor a = out.to(at::kDouble), b = ref.to(at::kDouble);
  return (a - b).norm().item<double>() / std::max(b.norm().item<double>(), 1e-30);
}

// Fraction of codes that differ, and the largest difference.
std::pair<double, int64_t> code_mismatch(const at::Tensor& a, const at::Tensor& b, int64_t bits) {
  const at::Tensor diff = (unpack_codes(a.cpu(), bits) - unpack_codes(b.cpu(), bits)).abs();
  return {diff.ne(0).to(at::kDouble).mean().item<double>(), diff.max().item<int64_t>()};
}

// Random data with what real keys have: a few channels with outliers, a constant group, and
// (fp16) a range that overflows the dtype, which the quantizer's guards must survive.
at::Tensor test_data(std::vector<int64_t> shape, at::ScalarType dtype, int64_t group) {
  at::Tensor x = at::randn(shape, at::kFloat);
  x.select(3, 3).mul_(8.0);
  x.select(3, shape[3] - 1).add_(5.0);
  x.narrow(2, 0, std::min<int64_t>(group, shape[2])).select(0, 0).select(0, 0).fill_(1.5);
  if (dtype == at::kHalf && shape[0] > 1 && shape[2] > 2) {
    x[1][0][1][7] = 60000.0;
    x[1][0][2][7] = -60000.0;
  }
  return x.to(dtype);
}

KiviParts parts_on_cpu(const KiviParts& p) {
  KiviParts c = p;
  for (at::Tensor* t : {&c.key_codes, &c.key_scale, &c.key_min, &c.key_residual, &c.value_codes,
                        &c.value_scale, &c.value_min, &c.value_residual})
    if (t->defined()) *t = t->cpu();
  return c;
}

// Softmax attention of one new token per row over dense K/V, in float64.
at::Tensor attend_float64(const at::Tensor& q, const DenseKV& kv,
                          const std::vector<int64_t>& lengths, const std::vector<int64_t>& counts,
                          double scale) {
  const int64_t batch = q.size(0), q_heads = q.size(1), kv_heads = kv.k.size(1);
  at::Tensor out = at::zeros(q.sizes(), at::kDouble);
  for (int64_t b = 0; b < batch; ++b) {
    if (counts[b] == 0) continue;
    const at::Tensor k = kv.k[b].narrow(1, 0, lengths[b]).to(at::kDouble);  // [H, L, D]
    const at::Tensor v = kv.v[b].narrow(1, 0, lengths[b]).to(at::kDouble);
    const at::Tensor qb = q[b].cpu().to(at::kDouble);  // [Hq, 1, D]
    for (int64_t hq = 0; hq < q_heads; ++hq) {
      const int64_t h = hq / (q_heads / kv_heads);
      const at::Tensor probs = at::softmax(at::matmul(qb[hq], k[h].t()) * scale, -1);  // [1, L]
      out[b][hq].copy_(at::matmul(probs, v[h]));
    }
  }
  return out;
}

struct DecodeCase {
  at::ScalarType dtype;
  int64_t dim, kv_heads, rep, k_bits, v_bits, group = 32, residual = 128;
  std::vector<int64_t> prompts = {700, 129, 40, 333};
};

std::string describe(const DecodeCase& c) {
  return std::string(c10::toString(c.dtype)) + " D" + std::to_string(c.dim) + " H" +
         std::to_string(c.kv_heads) + " rep" + std::to_string(c.rep) + " K" +
         std::to_string(c.k_bits) + "V" + std::to_string(c.v_bits) + " G" +
         std::to_string(c.group) + " R" + std::to_string(c.residual) + " B" +
         std::to_string(c.prompts.size());
}

struct DecodeErrors {
  double vs_blocked = 0, vs_float64 = 0;  // the kernel that serves by default
  double cores_vs_float64 = 0;            // the CUDA-core kernel
};

// Builds a cache on the GPU (the flush kernels fill it): prompts of different lengths, three
// decode steps (their flushes deferred), then a step with row 2 idle; checks the fused kernel.
DecodeErrors check_decode(const DecodeCase& c) {
  const int64_t batch = static_cast<int64_t>(c.prompts.size());
  CacheGeometry g;
  g.num_layers = 1;
  g.num_kv_heads = c.kv_heads;
  g.head_dim = c.dim;
  g.max_batch = batch;
  g.dtype = c.dtype;
  g.device = kGpu;
  KiviOptions o;
  o.k_bits = c.k_bits;
  o.v_bits = c.v_bits;
  o.group_size = c.group;
  o.residual_length = c.residual;
  KiviCache cache(g, o);
  const int64_t longest = *std::max_element(c.prompts.begin(), c.prompts.end());
  cache.append(0, test_data({batch, c.kv_heads, longest, c.dim}, c.dtype, c.group).to(kGpu),
               test_data({batch, c.kv_heads, longest, c.dim}, c.dtype, c.group).to(kGpu),
               c.prompts);
  std::vector<int64_t> counts(batch, 1);
  for (int step = 0; step < 4; ++step) {
    if (step == 3 && batch > 2) counts[2] = 0;
    cache.append(0, test_data({batch, c.kv_heads, 1, c.dim}, c.dtype, c.group).to(kGpu),
                 test_data({batch, c.kv_heads, 1, c.dim}, c.dtype, c.group).to(kGpu), counts);
  }
  const CacheView view = cache.view(0);
  const at::Tensor q =
      at::randn({batch, c.kv_heads * c.rep, 1, c.dim}, at::kFloat).to(c.dtype).to(kGpu);
  AttentionParams params;
  params.scale = 1.0 / std::sqrt(static_cast<double>(c.dim));

  auto run_fused = [&](bool cuda_cores_only) {
    const at::Tensor poisoned =
        at::full(q.sizes(), std::numeric_limits<float>::quiet_NaN(), q.options());
    std::string why;
    const auto fused = cuda_decode_attention(q, kivi_parts(view), view.lengths, counts, params,
                                             &why, poisoned, cuda_cores_only);
    INFO(why);
    REQUIRE(fused.has_value());
    const at::Tensor out = fused->cpu();
    REQUIRE(out.isnan().sum().item<int64_t>() == 0);
    if (batch > 2) CHECK(out[2].abs().max().item<double>() == 0.0);  // the idle row
    return out;
  };
  const at::Tensor out = run_fused(false), cores = run_fused(true);

  const KiviParts cpu_parts = parts_on_cpu(kivi_parts(view));
  CacheView cpu_view = view;
  cpu_view.payload = std::make_shared<const KiviParts>(cpu_parts);
  const at::Tensor blocked = KiviAttention(128).decode(q.cpu(), cpu_view, counts, params);
  const at::Tensor exact = attend_float64(q, expand_kivi(cpu_parts, view.lengths, at::kDouble),
                                          view.lengths, counts, params.scale);
  return {relative_error(out, blocked), relative_error(out, exact), relative_error(cores, exact)};
}

}  // namespace

TEST_CASE("kivi key flush kernel equals the ATen quantizer", "[gpu][kivi]") {
  const auto dtype = GENERATE(at::kHalf, at::kBFloat16, at::kFloat);
  const int64_t bits = GENERATE(2, 4, 8);
  const int64_t group = GENERATE(32, 64);
  INFO(c10::toString(dtype) << " bits " << bits << " group " << group);
  const at::Tensor x = test_data({2, 3, 128, 128}, dtype, group);
  // A strided input, as the cache's residual window is: [2, 3, T, D] viewed from [2, 3, D, T].
  const at::Tensor x_gpu = x.transpose(2, 3).contiguous().to(kGpu).transpose(2, 3);
  const int64_t groups = 128 / group;
  const auto words = at::TensorOptions().dtype(at::kInt).device(kGpu);
  at::Tensor codes = at::full({2, 3, groups, 128, group * bits / 32}, 0x5a5a5a5a, words);
  at::Tensor scale = at::full({2, 3, groups, 128}, NAN, x_gpu.options());
  at::Tensor min = at::full({2, 3, groups, 128}, NAN, x_gpu.options());
  REQUIRE(cuda_store_keys(x_gpu, group, bits, codes, scale, min));
  const PackedKeys ref = quantize_keys(x, group, bits);
  CHECK(at::equal(scale.cpu(), ref.scale));
  CHECK(at::equal(min.cpu(), ref.min));
  // The kernel writes the tile order; compared in the research order, code by code.
  const auto [fraction, largest] =
      code_mismatch(keys_from_tile_order(codes.cpu(), bits), ref.codes, bits);
  std::cout << "flush " << c10::toString(dtype) << " bits " << bits << " group " << group
            << ": codes differing from the ATen quantizer " << fraction << ", by at most "
            << largest << "\n";
  CHECK(fraction <= 1e-3);  // a value on a rounding boundary may land one code over
  CHECK(largest <= 1);
}

TEST_CASE("kivi value flush kernel equals the ATen quantizer", "[gpu][kivi]") {
  const auto dtype = GENERATE(at::kHalf, at::kBFloat16, at::kFloat);
  const int64_t bits = GENERATE(2, 4, 8);
  const int64_t group = GENERATE(32, 64);
  INFO(c10::toString(dtype) << " bits " << bits << " group " << group);
  const at::Tensor x = test_data({2, 3, 37, 128}, dtype, group);
  const at::Tensor x_gpu = x.to(kGpu);
  const auto words = at::TensorOptions().dtype(at::kInt).device(kGpu);
  at::Tensor codes = at::full({2, 3, 37, 128 * bits / 32}, 0x5a5a5a5a, words);
  at::Tensor scale = at::full({2, 3, 37, 128 / group}, NAN, x_gpu.options());
  at::Tensor min = at::full({2, 3, 37, 128 / group}, NAN, x_gpu.options());
  REQUIRE(cuda_store_values(x_gpu, group, bits, codes, scale, min));
  const PackedValues ref = quantize_values(x, group, bits);
  CHECK(at::equal(scale.cpu(), ref.scale));
  CHECK(at::equal(min.cpu(), ref.min));
  const auto [fraction, largest] =
      code_mismatch(values_from_tile_order(codes.cpu(), bits), ref.codes, bits);
  std::cout << "flush " << c10::toString(dtype) << " bits " << bits << " group " << group
            << ": codes differing from the ATen quantizer " << fraction << ", by at most "
            << largest << "\n";
  CHECK(fraction <= 1e-3);
  CHECK(largest <= 1);
}

TEST_CASE("fused decode attention: every bit width, head_dim and GQA ratio", "[gpu][kivi]") {
  const auto dtype = GENERATE(at::kHalf, at::kBFloat16);
  double worst_blocked = 0, worst_exact = 0, worst_cores = 0;
  for (int64_t dim : {64, 128})
    for (int64_t rep = 1; rep <= 8; ++rep)
      for (int64_t bits : {2, 4, 8}) {
        const DecodeCase c{dtype, dim, 2, rep, bits, bits};
        INFO(describe(c));
        const DecodeErrors e = check_decode(c);
        CHECK(e.vs_blocked <= relative_bound(dtype));
        CHECK(e.vs_float64 <= relative_bound(dtype));
        CHECK(e.cores_vs_float64 <= relative_bound(dtype));
        worst_blocked = std::max(worst_blocked, e.vs_blocked);
        worst_exact = std::max(worst_exact, e.vs_float64);
        worst_cores = std::max(worst_cores, e.cores_vs_float64);
      }
  std::cout << "fused decode " << c10::toString(dtype) << ": largest ||out - ref|| / ||ref|| "
            << worst_blocked << " vs the blocked CPU path, " << worst_exact
            << " vs float64 dequantize-then-attend (tensor cores), " << worst_cores
            << " (CUDA cores); 48 cases\n";
}

TEST_CASE("fused decode attention: mixed and 16-bit sides, groups, no residual, fp32, long rows",
          "[gpu][kivi]") {
  std::vector<DecodeCase> cases = {{at::kHalf, 128, 8, 4, 4, 2},
                                   {at::kBFloat16, 128, 8, 4, 2, 8},
                                   {at::kHalf, 128, 2, 4, 16, 16},
                                   {at::kBFloat16, 64, 2, 6, 16, 2},
                                   {at::kHalf, 64, 2, 7, 2, 16},
                                   {at::kHalf, 128, 2, 4, 2, 2, 64, 128},
                                   {at::kBFloat16, 128, 2, 3, 4, 4, 32, 0},
                                   {at::kFloat, 128, 2, 4, 2, 2},
                                   {at::kFloat, 64, 2, 1, 16, 16}};
  // One long row (many splits) and a batch over one launch's rows.
  cases.push_back({at::kHalf, 128, 8, 4, 2, 2, 32, 128, {6000}});
  cases.push_back({at::kBFloat16, 64, 1, 2, 4, 4, 32, 128, std::vector<int64_t>(70, 150)});
  cases.back().prompts[5] = 400;
  for (const DecodeCase& c : cases) {
    INFO(describe(c));
    const DecodeErrors e = check_decode(c);
    std::cout << "fused decode " << describe(c) << ": " << e.vs_blocked << " vs blocked, "
              << e.vs_float64 << " vs float64 (CUDA cores: " << e.cores_vs_float64 << ")\n";
    CHECK(e.vs_blocked <= relative_bound(c.dtype));
    CHECK(e.vs_float64 <= relative_bound(c.dtype));
    CHECK(e.cores_vs_float64 <= relative_bound(c.dtype));
  }
}

TEST_CASE("the fused kernel names what it serves when it cannot", "[gpu][kivi]") {
  CacheGeometry g;
  g.num_layers = 1;
  g.num_kv_heads = 1;
  g.head_dim = 96;
  g.max_batch = 1;
  g.dtype = at::kHalf;
  g.device = kGpu;
  KiviCache cache(g, KiviOptions{});
  const at::Tensor kv =
      at::randn({1, 1, 40, 96}, at::TensorOptions().dtype(at::kHalf).device(kGpu));
  cache.append(0, kv, kv);
  const CacheView view = cache.view(0);
  std::string why;
  const at::Tensor q = at::randn({1, 2, 1, 96}, kv.options());
  CHECK_FALSE(
      cuda_decode_attention(q, kivi_parts(view), view.lengths, {}, AttentionParams{}, &why));
  CHECK(why.find("head_dim 96") != std::string::npos);
  CHECK(why.find("head_dim 64 or 128") != std::string::npos);
  // The attention backend still serves it, through the blocked path.
  const at::Tensor out = KiviAttention(128).decode(q, view, {}, AttentionParams{});
  CHECK(out.isfinite().all().item<bool>());
}
