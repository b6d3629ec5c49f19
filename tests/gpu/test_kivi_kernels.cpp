// The KIVI cache's CUDA kernels against references, on fresh random data:
//   - the flush kernels (quantize + pack into the cache, in tile order) against the ATen
//     quantizer on the CPU;
//   - the fused decode attention (the tensor-core kernel and the CUDA-core one) against (a) the
//     plugin's blocked CPU attention over the same packed parts and (b) dequantize-then-attend
//     in float64, for 2/4/8/16 bits, head_dim 64
//     and 128, GQA ratios 1 to 8, fp16/bf16/fp32, a batch of different lengths with an idle row;
//     and the same parts moved into shuffled pages read through a block table, bit for bit;
//   - the fused chunk attention (a chunk's queries over the packed cache and causally over its
//     own K/V) against the same two references, and through shuffled pages bit for bit.
// Outputs are poisoned (NaN) before each run, so an element the kernel fails to write shows.
//
// Bounds on ||out - ref|| / ||ref|| (the output is rounded once to the storage dtype; the
// kernel accumulates in float32): fp16 2e-3, bf16 1e-2, fp32 2e-5.
#include <ATen/ATen.h>

#include <cmath>
#include <iostream>
#include <limits>
#include <memory>
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

// The packed parts of `p` (contiguous per sequence) moved into a pool of page_tokens-token pages
// in shuffled order, and the block table that finds them: a paged cache's layout.
std::pair<KiviParts, PackedPages> paged_copy(const KiviParts& p, int64_t page_tokens) {
  const int64_t batch = p.key_residual.size(0);
  int64_t per_row = 1;  // pages per sequence
  if (p.k_bits < 16)
    per_row =
        std::max(per_row, (p.key_codes.size(2) * p.group_size + page_tokens - 1) / page_tokens);
  if (p.v_bits < 16)
    per_row = std::max(per_row, (p.value_codes.size(2) + page_tokens - 1) / page_tokens);
  const at::Tensor order = at::randperm(batch * per_row, at::kLong);  // row-major (b, page)
  // t [B, H, units, rest...] -> pool [B * per_row, H, units per page, rest...], block (b, j) at
  // page order[b * per_row + j].
  auto move = [&](const at::Tensor& t, int64_t units_per_page) {
    std::vector<int64_t> padded_shape = t.sizes().vec();
    padded_shape[2] = per_row * units_per_page;
    at::Tensor padded = at::zeros(padded_shape, t.options());
    padded.narrow(2, 0, t.size(2)).copy_(t);
    std::vector<int64_t> split = padded_shape, pooled = padded_shape;
    split[2] = units_per_page;
    split.insert(split.begin() + 2, per_row);  // [B, H, per_row, units per page, rest...]
    const at::Tensor blocks = padded.view(split).movedim(2, 1).reshape([&] {
      std::vector<int64_t> shape = split;
      shape.erase(shape.begin() + 2);
      shape[0] = batch * per_row;
      return shape;
    }());
    at::Tensor pool = at::zeros_like(blocks);
    pool.index_copy_(0, order.to(t.device()), blocks);
    return pool;
  };
  KiviParts paged = p;
  if (p.k_bits < 16) {
    const int64_t groups_per_page = page_tokens / p.group_size;
    paged.key_codes = move(p.key_codes, groups_per_page);
    paged.key_scale = move(p.key_scale, groups_per_page);
    paged.key_min = move(p.key_min, groups_per_page);
  }
  if (p.v_bits < 16) {
    paged.value_codes = move(p.value_codes, page_tokens);
    paged.value_scale = move(p.value_scale, page_tokens);
    paged.value_min = move(p.value_min, page_tokens);
  }
  PackedPages pages;
  pages.table = order.view({batch, per_row}).to(at::kInt).to(p.key_residual.device());
  pages.page_tokens = page_tokens;
  return {paged, pages};
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

  auto run_fused = [&](const KiviParts& parts, bool cuda_cores_only, const PackedPages& pages) {
    const at::Tensor poisoned =
        at::full(q.sizes(), std::numeric_limits<float>::quiet_NaN(), q.options());
    std::string why;
    const auto fused = cuda_decode_attention(q, parts, view.lengths, counts, params, &why, poisoned,
                                             cuda_cores_only, pages);
    INFO(why);
    REQUIRE(fused.has_value());
    const at::Tensor out = fused->cpu();
    REQUIRE(out.isnan().sum().item<int64_t>() == 0);
    if (batch > 2) CHECK(out[2].abs().max().item<double>() == 0.0);  // the idle row
    return out;
  };
  const at::Tensor out = run_fused(kivi_parts(view), false, {}),
                   cores = run_fused(kivi_parts(view), true, {});
  // Through the backend with AttentionParams::out (as decode graphs pass their buffer): written
  // there, the same bits.
  AttentionParams into = params;
  into.out = at::full(q.sizes(), std::numeric_limits<float>::quiet_NaN(), q.options());
  const at::Tensor written = KiviAttention(128).decode(q, view, counts, into);
  CHECK(written.is_same(into.out));
  CHECK(at::equal(written.cpu(), out));
  // The same parts in shuffled pages, through a block table: the same kernels, the same bits.
  const auto [paged, pages] = paged_copy(kivi_parts(view), 2 * c.group);
  CHECK(at::equal(run_fused(paged, false, pages), out));
  CHECK(at::equal(run_fused(paged, true, pages), cores));

  const KiviParts cpu_parts = parts_on_cpu(kivi_parts(view));
  CacheView cpu_view = view;
  cpu_view.payload = std::make_shared<const KiviParts>(cpu_parts);
  const at::Tensor blocked = KiviAttention(128).decode(q.cpu(), cpu_view, counts, params);
  const at::Tensor exact = attend_float64(q, expand_kivi(cpu_parts, view.lengths, at::kDouble),
                                          view.lengths, counts, params.scale);
  return {relative_error(out, blocked), relative_error(out, exact), relative_error(cores, exact)};
}

// A KIVI cache the fused kernels do not serve (head_dim 96), holding 40 tokens of one row.
std::unique_ptr<KiviCache> unserved_cache() {
  CacheGeometry g;
  g.num_layers = 1;
  g.num_kv_heads = 1;
  g.head_dim = 96;
  g.max_batch = 1;
  g.dtype = at::kHalf;
  g.device = kGpu;
  auto cache = std::make_unique<KiviCache>(g, KiviOptions{});
  const at::Tensor kv =
      at::randn({1, 1, 40, 96}, at::TensorOptions().dtype(at::kHalf).device(kGpu));
  cache->append(0, kv, kv);
  return cache;
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

// Decode steps on the GPU take one fused kernel per layer (the deferred value flush and both
// window writes, cuda/decode_append.cu); on the CPU, ATen's quantizer and copies. Fed the same
// tokens, through key flushes and a full value window, with rows of different lengths and idle
// rows, both caches must hold the same parts.
TEST_CASE("a GPU cache's fused decode appends store what the CPU cache stores", "[gpu][kivi]") {
  const auto dtype = GENERATE(at::kHalf, at::kBFloat16);
  const int64_t bits = GENERATE(2, 4, 8);
  const int64_t dim = GENERATE(64, 128);
  INFO(c10::toString(dtype) << " bits " << bits << " dim " << dim);
  const std::vector<int64_t> prompts = {130, 1, 0, 257};
  const int64_t batch = static_cast<int64_t>(prompts.size()), heads = 2;
  CacheGeometry g;
  g.num_layers = 1;
  g.num_kv_heads = heads;
  g.head_dim = dim;
  g.max_batch = batch;
  g.dtype = dtype;
  KiviOptions o;
  o.k_bits = bits;
  o.v_bits = bits;
  KiviCache cpu(g, o);
  g.device = kGpu;
  KiviCache gpu(g, o);
  auto append = [&](const at::Tensor& k, const at::Tensor& v, const std::vector<int64_t>& n) {
    cpu.append(0, k, v, n);
    gpu.append(0, k.to(kGpu), v.to(kGpu), n);
  };
  append(test_data({batch, heads, 257, dim}, dtype, 32),
         test_data({batch, heads, 257, dim}, dtype, 32), prompts);
  at::manual_seed(7);
  for (int step = 0; step < 300; ++step) {
    std::vector<int64_t> counts(batch, 1);
    counts[step % batch] = step % 3 == 0 ? 0 : 1;  // now and then a row sits a step out
    append(test_data({batch, heads, 1, dim}, dtype, 32),
           test_data({batch, heads, 1, dim}, dtype, 32), counts);
  }
  const CacheView cpu_view = cpu.view(0), gpu_view = gpu.view(0);
  const KiviParts& expected = kivi_parts(cpu_view);
  const KiviParts got = parts_on_cpu(kivi_parts(gpu_view));
  CHECK(cpu_view.lengths == gpu_view.lengths);
  CHECK(got.key_quantized == expected.key_quantized);
  CHECK(got.value_quantized == expected.value_quantized);
  CHECK(at::equal(got.key_residual, expected.key_residual));
  CHECK(at::equal(got.value_residual, expected.value_residual));
  CHECK(at::equal(got.key_scale, expected.key_scale));
  CHECK(at::equal(got.key_min, expected.key_min));
  CHECK(at::equal(got.value_scale, expected.value_scale));
  CHECK(at::equal(got.value_min, expected.value_min));
  for (auto [a, b] : {std::pair{&got.key_codes, &expected.key_codes},
                      std::pair{&got.value_codes, &expected.value_codes}}) {
    const auto [fraction, largest] = code_mismatch(*a, *b, bits);
    CHECK(fraction <= 1e-3);  // a value on a rounding boundary may land one code over
    CHECK(largest <= 1);
  }
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
  const auto cache = unserved_cache();
  const CacheView view = cache->view(0);
  const auto kv = at::TensorOptions().dtype(at::kHalf).device(kGpu);
  std::string why;
  const at::Tensor q = at::randn({1, 2, 1, 96}, kv);
  CHECK_FALSE(
      cuda_decode_attention(q, kivi_parts(view), view.lengths, {}, AttentionParams{}, &why));
  CHECK(why.find("head_dim 96") != std::string::npos);
  CHECK(why.find("head_dim 64 or 128") != std::string::npos);
  // The attention backend still serves it, through the blocked path.
  const at::Tensor out = KiviAttention(128).decode(q, view, {}, AttentionParams{});
  CHECK(out.isfinite().all().item<bool>());
}

// ---- Fused chunk attention ------------------------------------------------------------------

namespace {

// A chunk in float64: token t of row b (t < counts[b]) at position lengths[b] + t attends to the
// row's stored positions (dense, dequantized) and to its own k/v at positions <= its own.
at::Tensor chunk_float64(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const DenseKV& stored, const std::vector<int64_t>& lengths,
                         const std::vector<int64_t>& counts, double scale) {
  const int64_t batch = q.size(0), q_heads = q.size(1), kv_heads = k.size(1);
  at::Tensor out = at::zeros(q.sizes(), at::kDouble);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = counts[b], length = lengths[b];
    if (n == 0) continue;
    const at::Tensor keys = at::cat({stored.k[b].narrow(1, 0, length).to(at::kDouble),
                                     k[b].narrow(1, 0, n).cpu().to(at::kDouble)},
                                    1);  // [H, L + n, D]
    const at::Tensor values = at::cat({stored.v[b].narrow(1, 0, length).to(at::kDouble),
                                       v[b].narrow(1, 0, n).cpu().to(at::kDouble)},
                                      1);
    const at::Tensor positions = at::arange(length + n, at::kLong);
    const at::Tensor hidden =
        positions.unsqueeze(0) > (at::arange(n, at::kLong) + length).unsqueeze(1);  // [n, L + n]
    const at::Tensor qb = q[b].cpu().to(at::kDouble);                               // [Hq, T, D]
    for (int64_t hq = 0; hq < q_heads; ++hq) {
      const int64_t h = hq / (q_heads / kv_heads);
      const at::Tensor scores = at::matmul(qb[hq].narrow(0, 0, n), keys[h].t())
                                    .mul_(scale)
                                    .masked_fill_(hidden, -std::numeric_limits<double>::infinity());
      out[b][hq].narrow(0, 0, n).copy_(at::matmul(at::softmax(scores, -1), values[h]));
    }
  }
  return out;
}

struct ChunkCase {
  at::ScalarType dtype;
  int64_t dim, kv_heads, rep, k_bits, v_bits, group = 32, residual = 128;
  std::vector<int64_t> stored = {700, 129, 40, 333};  // tokens each row holds before the chunk
  std::vector<int64_t> counts = {7, 100, 0, 32};      // the chunk's tokens per row (0: idle)
  int64_t page_tokens = 64;                           // of the paged copy
};

std::string describe(const ChunkCase& c) {
  std::string rows;
  for (size_t b = 0; b < c.stored.size() && b < 4; ++b)
    rows += " " + std::to_string(c.stored[b]) + "+" + std::to_string(c.counts[b]);
  if (c.stored.size() > 4) rows += " ... (" + std::to_string(c.stored.size()) + " rows)";
  return std::string(c10::toString(c.dtype)) + " D" + std::to_string(c.dim) + " H" +
         std::to_string(c.kv_heads) + " rep" + std::to_string(c.rep) + " K" +
         std::to_string(c.k_bits) + "V" + std::to_string(c.v_bits) + " G" +
         std::to_string(c.group) + " R" + std::to_string(c.residual) + " stored+chunk" + rows;
}

struct ChunkErrors {
  double vs_blocked = 0, vs_float64 = 0;
};

// Builds a cache on the GPU: prompts, then two decode steps (their flushes deferred, as a chunk
// after decoding finds them) so that each row holds c.stored[b] tokens; a chunk of c.counts[b]
// new tokens then attends over it. Checks the fused kernel against the blocked CPU path and
// float64, and the same parts in shuffled pages through a block table bit for bit.
ChunkErrors check_chunk(const ChunkCase& c) {
  const int64_t batch = static_cast<int64_t>(c.stored.size()), steps = 2;
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
  std::vector<int64_t> prompts(batch), step_counts(batch);
  for (int64_t b = 0; b < batch; ++b) {
    step_counts[b] = c.stored[b] >= steps + 1 ? 1 : 0;
    prompts[b] = c.stored[b] - steps * step_counts[b];
  }
  const int64_t longest = *std::max_element(prompts.begin(), prompts.end());
  cache.append(0, test_data({batch, c.kv_heads, longest, c.dim}, c.dtype, c.group).to(kGpu),
               test_data({batch, c.kv_heads, longest, c.dim}, c.dtype, c.group).to(kGpu), prompts);
  for (int64_t step = 0; step < steps; ++step)
    cache.append(0, test_data({batch, c.kv_heads, 1, c.dim}, c.dtype, c.group).to(kGpu),
                 test_data({batch, c.kv_heads, 1, c.dim}, c.dtype, c.group).to(kGpu), step_counts);
  const CacheView view = cache.view(0);
  REQUIRE(view.lengths == c.stored);

  const int64_t tokens = *std::max_element(c.counts.begin(), c.counts.end());
  const at::Tensor q =
      at::randn({batch, c.kv_heads * c.rep, tokens, c.dim}, at::kFloat).to(c.dtype).to(kGpu);
  // The chunk's own K/V as a model makes them: a view of a wider projection, not contiguous.
  // Without test_data's fp16 outliers in the keys (channel 7): a chunk key of 60000 would tie
  // with the stored one of the same size, and a tie between such keys is decided by roundings
  // far below the bounds (the kernel rounds dequantized keys to fp16, as a dense fp16 cache
  // holds them; the blocked path keeps float32).
  const at::Tensor kv =
      test_data({batch, c.kv_heads, tokens, 2 * c.dim}, c.dtype, c.group).to(kGpu);
  kv.select(3, 7).clamp_(-64.0, 64.0);
  const at::Tensor k = kv.narrow(3, 0, c.dim), v = kv.narrow(3, c.dim, c.dim);
  AttentionParams params;
  params.scale = 1.0 / std::sqrt(static_cast<double>(c.dim));

  auto run_fused = [&](const KiviParts& parts, const PackedPages& pages) {
    std::string why;
    const auto fused =
        cuda_chunk_attention(q, k, v, parts, view.lengths, c.counts, params, &why, pages);
    INFO(why);
    REQUIRE(fused.has_value());
    const at::Tensor out = fused->cpu();
    REQUIRE(out.isnan().sum().item<int64_t>() == 0);
    for (int64_t b = 0; b < batch; ++b)  // padding and idle rows are zeros
      if (c.counts[b] < tokens)
        CHECK(out[b].narrow(1, c.counts[b], tokens - c.counts[b]).abs().max().item<double>() ==
              0.0);
    return out;
  };
  const at::Tensor out = run_fused(kivi_parts(view), {});
  // Pages of whole groups, as a paged cache holds them.
  const int64_t page_tokens = (c.page_tokens + c.group - 1) / c.group * c.group;
  const auto [paged, pages] = paged_copy(kivi_parts(view), page_tokens);
  CHECK(at::equal(run_fused(paged, pages), out));
  // The attention backend dispatches to the same kernel.
  CHECK(at::equal(KiviAttention(128).chunk(q, k, v, view, c.counts, params).cpu(), out));

  const KiviParts cpu_parts = parts_on_cpu(kivi_parts(view));
  CacheView cpu_view = view;
  cpu_view.payload = std::make_shared<const KiviParts>(cpu_parts);
  const at::Tensor blocked =
      KiviAttention(128).chunk(q.cpu(), k.cpu(), v.cpu(), cpu_view, c.counts, params);
  const at::Tensor exact = chunk_float64(q, k, v, expand_kivi(cpu_parts, view.lengths, at::kDouble),
                                         view.lengths, c.counts, params.scale);
  return {relative_error(out, blocked), relative_error(out, exact)};
}

}  // namespace

TEST_CASE("fused chunk attention: every bit width, head_dim and GQA ratio", "[gpu][kivi]") {
  const auto dtype = GENERATE(at::kHalf, at::kBFloat16);
  // Chunks of 1 to 300 tokens after stored lengths that put the chunk's first position inside a
  // key group and the packed / residual boundaries inside tiles; a row with no new tokens.
  const std::vector<std::vector<int64_t>> stored = {{700, 129, 40, 333}, {31, 1000, 160, 257}};
  const std::vector<std::vector<int64_t>> counts = {{7, 100, 0, 32}, {256, 1, 300, 37}};
  const int64_t bits[3][2] = {{2, 4}, {4, 8}, {8, 2}};
  double worst_blocked = 0, worst_exact = 0;
  int cases = 0;
  for (int64_t dim : {64, 128})
    for (int64_t rep : {1, 2, 3, 4, 8})
      for (const auto& kv_bits : bits) {
        ChunkCase c{dtype, dim, 2, rep, kv_bits[0], kv_bits[1]};
        c.stored = stored[cases % 2];
        c.counts = counts[cases % 2];
        c.page_tokens = cases % 2 ? 128 : 64;
        ++cases;
        INFO(describe(c));
        const ChunkErrors e = check_chunk(c);
        CHECK(e.vs_blocked <= relative_bound(dtype));
        CHECK(e.vs_float64 <= relative_bound(dtype));
        worst_blocked = std::max(worst_blocked, e.vs_blocked);
        worst_exact = std::max(worst_exact, e.vs_float64);
      }
  std::cout << "fused chunk " << c10::toString(dtype) << ": largest ||out - ref|| / ||ref|| "
            << worst_blocked << " vs the blocked CPU path, " << worst_exact
            << " vs float64 dequantize-then-attend; " << cases << " cases\n";
}

TEST_CASE("fused chunk attention: 16-bit sides, groups, no residual, long rows, large batches",
          "[gpu][kivi]") {
  std::vector<ChunkCase> cases = {{at::kHalf, 128, 8, 4, 16, 16},
                                  {at::kBFloat16, 64, 2, 6, 16, 2},
                                  {at::kHalf, 64, 2, 7, 2, 16},
                                  {at::kHalf, 128, 2, 4, 2, 2, 64, 128},
                                  {at::kBFloat16, 128, 2, 3, 4, 4, 128, 128},
                                  {at::kBFloat16, 128, 2, 2, 8, 8, 32, 0}};
  // Llama-3.1-8B's heads over a long row (split across blocks), GQA 3 (24 / 8 heads), a batch
  // over one launch's rows.
  cases.push_back({at::kHalf, 128, 8, 4, 2, 2, 32, 128, {8000}, {256}, 128});
  cases.push_back({at::kBFloat16, 128, 8, 3, 4, 2, 32, 128, {3000, 50}, {100, 64}});
  cases.push_back({at::kHalf, 64, 1, 2, 4, 4, 32, 128, std::vector<int64_t>(70, 150),
                   std::vector<int64_t>(70, 3)});
  cases.back().stored[5] = 400;
  cases.back().counts[6] = 0;
  cases.back().counts[69] = 40;
  for (const ChunkCase& c : cases) {
    INFO(describe(c));
    const ChunkErrors e = check_chunk(c);
    std::cout << "fused chunk " << describe(c) << ": " << e.vs_blocked << " vs blocked, "
              << e.vs_float64 << " vs float64\n";
    CHECK(e.vs_blocked <= relative_bound(c.dtype));
    CHECK(e.vs_float64 <= relative_bound(c.dtype));
  }
}

TEST_CASE("the fused chunk kernel names what it cannot serve", "[gpu][kivi]") {
  const auto cache = unserved_cache();
  const CacheView view = cache->view(0);
  const auto kv = at::TensorOptions().dtype(at::kHalf).device(kGpu);
  const at::Tensor q = at::randn({1, 2, 5, 96}, kv);
  const at::Tensor k = at::randn({1, 1, 5, 96}, kv);
  std::string why;
  CHECK_FALSE(
      cuda_chunk_attention(q, k, k, kivi_parts(view), view.lengths, {}, AttentionParams{}, &why));
  CHECK(why.find("head_dim 96") != std::string::npos);
  CHECK(why.find("head_dim 64 or 128") != std::string::npos);
  AttentionParams window;
  window.sliding_window = 16;
  CHECK_FALSE(cuda_chunk_attention(q, k, k, kivi_parts(view), view.lengths, {}, window, &why));
  CHECK(why.find("sliding window") != std::string::npos);
  // The attention backend still serves it, through the blocked path.
  const at::Tensor out = KiviAttention(128).chunk(q, k, k, view, {}, AttentionParams{});
  CHECK(out.isfinite().all().item<bool>());
}
