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

TEST_CASE("fused rms_norm, rotary and silu-mul equal the ATen ops on the GPU", "[model][gpu]") {
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

  // Rotary over a strided q view as the model makes it: [B, T, heads * D] -> [B, heads, T, D].
  const int64_t batch = 2, tokens = 7, heads = 4, dim = 128;
  const at::Tensor qkv = at::randn({batch, tokens, 3 * heads * dim}, opts);
  const at::Tensor q =
      qkv.narrow(-1, heads * dim, heads * dim).view({batch, tokens, heads, dim}).transpose(1, 2);
  const at::Tensor angle = at::rand({batch, tokens, dim}, opts.dtype(at::kFloat)) * 100;
  const at::Tensor cos = angle.cos().to(dtype), sin = angle.sin().to(dtype);
  CHECK(at::equal(fused::rotary(q, cos, sin), reference_rotary(q, cos, sin)));

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
