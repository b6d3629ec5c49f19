// The fused CUDA kernels of the decoder's small ops (model/fused_ops.h) against the ATen chains
// they replace, run on the same GPU: rotary and SiLU-times-up must be bit-identical (the same
// roundings in the same order); RMSNorm sums in another order, so its float32 results may differ
// by rounding and its half-precision ones by one unit in the last place.
#include <ATen/ATen.h>

#include "kivi/model/fused_ops.h"

#include "kivi_catch.h"  // last: keeps Catch's CHECK over c10's

using namespace kivi;

namespace {

// The ATen chains of layers.cpp and rotary.cpp.
at::Tensor reference_rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  const at::Tensor x32 = x.to(at::kFloat);
  return w * (x32 * at::rsqrt(x32.pow(2).mean(-1, true) + eps)).to(x.scalar_type());
}
at::Tensor reference_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1);
}

double ulp_bound(at::ScalarType t) {
  return t == at::kBFloat16 ? 1.0 / 128 : t == at::kHalf ? 1.0 / 1024 : 1e-6;
}

}  // namespace

TEST_CASE("fused rms_norm, add + rms_norm, rotary, gemv and silu-mul equal the ATen ops on the GPU",
          "[model][gpu]") {
  const auto dtype = GENERATE(at::kFloat, at::kHalf, at::kBFloat16);
  INFO(c10::toString(dtype));
  at::manual_seed(7);
  const auto opts = at::TensorOptions().device(at::kCUDA).dtype(dtype);

  // RMSNorm over [B, T, hidden], and over a strided row view.
  const at::Tensor x = at::randn({3, 5, 4096}, opts) * 3;
  const at::Tensor w = at::randn({4096}, opts);
  REQUIRE(fused::fused_ops_apply(x));
  for (const at::Tensor& input : {x, x.narrow(-1, 0, 4096).select(1, 2)}) {
    const at::Tensor got = fused::rms_norm(input, w, 1e-5),
                     want = reference_rms_norm(input, w, 1e-5);
    // Relative to each element's size: one unit in the last place of the storage type.
    const double worst =
        ((got.to(at::kFloat) - want.to(at::kFloat)).abs() / (want.to(at::kFloat).abs() + 1e-3))
            .max()
            .item<double>();
    CHECK(worst <= 2 * ulp_bound(dtype));
  }

  // The residual add fused into the norm: the sum bit for bit as ATen adds, the norm as above;
  // also over rows too narrow for 16-byte loads (hidden 1000 is not a multiple of 8 halves).
  for (const int64_t hidden : {int64_t{4096}, int64_t{1000}}) {
    const at::Tensor h = at::randn({3, 5, hidden}, opts) * 3,
                     delta = at::randn({3, 5, hidden}, opts);
    const at::Tensor wh = at::randn({hidden}, opts);
    const auto [sum, normed] = fused::add_rms_norm(h, delta, wh, 1e-5);
    CHECK(at::equal(sum, h + delta));
    const at::Tensor want = reference_rms_norm(h + delta, wh, 1e-5);
    const double worst =
        ((normed.to(at::kFloat) - want.to(at::kFloat)).abs() / (want.to(at::kFloat).abs() + 1e-3))
            .max()
            .item<double>();
    CHECK(worst <= 2 * ulp_bound(dtype));
  }

  // Rotary over a strided q view as the model makes it: [B, T, heads * D] -> [B, heads, T, D].
  const int64_t batch = 2, tokens = 7, heads = 4, dim = 128;
  const at::Tensor qkv = at::randn({batch, tokens, 3 * heads * dim}, opts);
  const at::Tensor q =
      qkv.narrow(-1, heads * dim, heads * dim).view({batch, tokens, heads, dim}).transpose(1, 2);
  const at::Tensor angle = at::rand({batch, tokens, dim}, opts.dtype(at::kFloat)) * 100;
  const at::Tensor cos = angle.cos().to(dtype), sin = angle.sin().to(dtype);
  CHECK(at::equal(fused::rotary(q, cos, sin), reference_rotary(q, cos, sin)));
  // q and k (fewer heads, another view of the same rows) in one launch.
  const at::Tensor k = qkv.narrow(-1, 0, 2 * dim).view({batch, tokens, 2, dim}).transpose(1, 2);
  const auto [q_rot, k_rot] = fused::rotary_pair(q, k, cos, sin);
  CHECK(at::equal(q_rot, reference_rotary(q, cos, sin)));
  CHECK(at::equal(k_rot, reference_rotary(k, cos, sin)));

  // The GEMV of batch-1..4 projections against a float32 reference: only the output's rounding
  // (and the float sum's order) may differ. Rows 1-4, with and without bias, a strided x, and
  // a k of the down projection; 5 rows and float32 are left to at::linear.
  if (dtype != at::kFloat) {
    for (const int64_t rows : {1, 2, 3, 4}) {
      for (const auto& [n, k] : {std::pair<int64_t, int64_t>{1000, 4096}, {72, 14336}}) {
        INFO("rows " << rows << ", n " << n << ", k " << k);
        const at::Tensor wide = at::randn({rows, k + 64}, opts);
        const at::Tensor x_rows = wide.narrow(1, 8, k);  // row stride k + 64
        const at::Tensor weight = at::randn({n, k}, opts) * 0.05;
        const at::Tensor bias = at::randn({n}, opts);
        for (const bool with_bias : {false, true}) {
          const auto got = fused::small_linear(x_rows, weight, with_bias ? bias : at::Tensor());
          REQUIRE(got.has_value());
          at::Tensor want = at::matmul(x_rows.to(at::kFloat), weight.to(at::kFloat).t());
          if (with_bias) want = want + bias.to(at::kFloat);
          const double worst =
              ((got->to(at::kFloat) - want).abs() / (want.abs() + 1e-2)).max().item<double>();
          CHECK(worst <= 2 * ulp_bound(dtype));
        }
      }
    }
    CHECK_FALSE(fused::small_linear(at::randn({5, 64}, opts), at::randn({8, 64}, opts), {}));
  } else {
    CHECK_FALSE(fused::small_linear(at::randn({1, 64}, opts), at::randn({8, 64}, opts), {}));
  }

  // SiLU(gate) * up over [B, T, 2 * intermediate].
  const at::Tensor gate_up = at::randn({batch, tokens, 2 * 1000}, opts) * 4;
  const at::Tensor want = at::silu(gate_up.narrow(-1, 0, 1000)) * gate_up.narrow(-1, 1000, 1000);
  const at::Tensor got = fused::silu_mul(gate_up);
  // ATen's silu may use a faster exp than expf: equal, or within one unit in the last place.
  const double worst =
      ((got.to(at::kFloat) - want.to(at::kFloat)).abs() / (want.to(at::kFloat).abs() + 1e-3))
          .max()
          .item<double>();
  CHECK(worst <= ulp_bound(dtype));
}
