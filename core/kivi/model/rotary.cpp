#include "kivi/model/rotary.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>

#include "kivi/model/fused_ops.h"
#include "kivi/util/error.h"

namespace kivi {
namespace {

// arange(0, dim, 2) / dim in float32, as the reference builds the exponent.
at::Tensor exponents(int64_t dim) {
  return at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
}

// 1.0 / (base ** exponents): Python's `1.0 / t` is t.reciprocal() * 1.0.
at::Tensor default_inv_freq(double base, int64_t dim) {
  return at::pow(base, exponents(dim)).reciprocal() * 1.0;
}

at::Tensor llama3_inv_freq(const RopeConfig& r, int64_t dim) {
  const at::Tensor inv_freq = default_inv_freq(r.theta, dim);
  const double old_context = static_cast<double>(r.original_max_position_embeddings);
  const double low_wavelen = old_context / r.low_freq_factor;
  const double high_wavelen = old_context / r.high_freq_factor;
  const at::Tensor wavelen = inv_freq.reciprocal() * (2 * M_PI);  // 2*pi / inv_freq
  // Long wavelengths (low frequencies) are divided by factor; short ones are kept.
  at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq / r.factor, inv_freq);
  // In between: interpolate with a smooth factor in [0, 1].
  const at::Tensor smooth = (wavelen.reciprocal() * old_context - r.low_freq_factor) /
                            (r.high_freq_factor - r.low_freq_factor);
  const at::Tensor smoothed = (1 - smooth) * scaled / r.factor + smooth * scaled;
  const at::Tensor medium =
      at::logical_not(wavelen < high_wavelen) * at::logical_not(wavelen > low_wavelen);
  return at::where(medium, smoothed, scaled);
}

}  // namespace

RotaryEmbedding::RotaryEmbedding(const RopeConfig& rope, int64_t head_dim, int64_t max_positions,
                                 at::Device device)
    : rope_(rope), dim_(head_dim), max_positions_(max_positions) {
  if (rope_.type == "default" || rope_.type == "dynamic") {
    // dynamic at start-up: seq_len = max_position_embeddings leaves the base unchanged.
    base_inv_freq_ = default_inv_freq(rope_.theta, dim_);
  } else if (rope_.type == "linear") {
    base_inv_freq_ = default_inv_freq(rope_.theta, dim_) / rope_.factor;
  } else if (rope_.type == "llama3") {
    base_inv_freq_ = llama3_inv_freq(rope_, dim_);
  } else {
    throw Error("rotary embedding: rope type \"" + rope_.type +
                "\" is not supported; expected default, linear, dynamic or llama3");
  }
  device_inv_freq_ = base_inv_freq_.to(device);
}

at::Tensor RotaryEmbedding::inv_freq(int64_t seq_len) const {
  if (rope_.type != "dynamic" || seq_len <= max_positions_) return base_inv_freq_;
  // Dynamic NTK: base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2)),
  // where the reference's seq_len is an int64 tensor, so this runs in float32.
  const at::Tensor len = at::scalar_tensor(seq_len, at::kLong);
  const at::Tensor grown =
      (len * rope_.factor / static_cast<double>(max_positions_) - (rope_.factor - 1))
          .pow(static_cast<double>(dim_) / static_cast<double>(dim_ - 2)) *
      rope_.theta;
  return at::pow(grown, exponents(dim_)).reciprocal() * 1.0;
}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::cos_sin(const at::Tensor& positions,
                                                           std::span<const int64_t> counts,
                                                           at::ScalarType dtype) const {
  const int64_t batch = positions.size(0), tokens = positions.size(1);
  at::Tensor inv;  // [B, 1, dim/2] or [1, 1, dim/2]
  if (rope_.type == "dynamic") {
    // Each row's own length; positions are read on the host (small: [B, T]).
    const at::Tensor host = positions.to(at::kCPU, at::kLong).contiguous();
    std::vector<at::Tensor> rows;
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t n = counts.empty() ? tokens : counts[b];
      const int64_t seq_len = n > 0 ? host[b].narrow(0, 0, n).max().item<int64_t>() + 1 : 0;
      rows.push_back(inv_freq(seq_len));
    }
    inv = at::stack(rows).unsqueeze(1);
  } else {
    inv = device_inv_freq_.view({1, 1, -1});
  }
  inv = inv.to(positions.device());  // a no-op on the device given at construction
  const at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv;  // [B, T, dim/2]
  const at::Tensor emb = at::cat({freqs, freqs}, -1);                     // [B, T, dim]
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

namespace {

bool fused_rotary_applies(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return fused::fused_ops_apply(x) && x.dim() == 4 && x.size(-1) % 2 == 0 && cos.dim() == 3 &&
         cos.sizes() == sin.sizes() && cos.size(0) == x.size(0) && cos.size(1) == x.size(2) &&
         cos.size(2) == x.size(3) && cos.scalar_type() == x.scalar_type() &&
         sin.scalar_type() == x.scalar_type() && cos.device() == x.device();
}

}  // namespace

std::pair<at::Tensor, at::Tensor> apply_rotary_pair(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& cos, const at::Tensor& sin) {
  if (fused_rotary_applies(q, cos, sin) && fused_rotary_applies(k, cos, sin) &&
      k.scalar_type() == q.scalar_type())
    return fused::rotary_pair(q, k, cos, sin);
  return {apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)};
}

at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  if (fused_rotary_applies(x, cos, sin)) return fused::rotary(x, cos, sin);
  const int64_t half = x.size(-1) / 2;
  const at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1);
}

}  // namespace kivi
