// Rotary position embedding with the scaling variants of Hugging Face's modeling_rope_utils:
// default, linear (inv_freq / factor), dynamic NTK (base grown with the sequence length) and
// llama3 (per-band: high frequencies kept, low divided by factor, the middle smoothed). The
// inverse frequencies are computed with the same float32 tensor operations as the reference,
// so cos/sin agree to the last bit. All these types have attention scaling 1.
//
// Dynamic scaling is computed per call from each row's largest position, without the
// reference's cached state; for the usual monotone prefill-then-decode this is the same
// (the reference recomputes whenever the length grows past max_position_embeddings, and keys
// already in the cache keep the rotation they were stored with, here as there).
#pragma once

#include <cstdint>
#include <span>
#include <utility>

#include <ATen/Tensor.h>

#include "kivi/model/model_config.h"

namespace kivi {

class RotaryEmbedding {
 public:
  // `device`: where cos_sin() will be called, so the decode loop does not copy inv_freq there
  // every step.
  RotaryEmbedding(const RopeConfig& rope, int64_t head_dim, int64_t max_position_embeddings,
                  at::Device device = at::kCPU);

  // inv_freq for a sequence whose largest position is seq_len - 1 (only dynamic depends on it).
  at::Tensor inv_freq(int64_t seq_len) const;  // [head_dim / 2] float32, CPU

  // cos and sin for positions [B, T] (any device), in `dtype`: each [B, T, head_dim].
  // counts[b] valid tokens per row (empty: all); dynamic scaling takes each row's own length
  // from its largest valid position, as the reference does for one unpadded sequence.
  std::pair<at::Tensor, at::Tensor> cos_sin(const at::Tensor& positions,
                                            std::span<const int64_t> counts,
                                            at::ScalarType dtype) const;

  // Whether cos_sin() reads positions on the host (dynamic scaling), so it cannot run inside
  // a CUDA graph.
  bool reads_positions_on_host() const { return rope_.type == "dynamic"; }

 private:
  RopeConfig rope_;
  int64_t dim_;
  int64_t max_positions_;
  at::Tensor base_inv_freq_;    // [dim / 2]: the inv_freq before any dynamic growth (CPU)
  at::Tensor device_inv_freq_;  // the same on the device given at construction
};

// x * cos + rotate_half(x) * sin, with x [B, heads, T, head_dim] and cos/sin [B, T, head_dim].
// On CUDA one fused kernel with the same roundings (model/fused_ops.h).
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
// apply_rotary of a layer's q and k with the same cos/sin: on CUDA one launch for both.
std::pair<at::Tensor, at::Tensor> apply_rotary_pair(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& cos, const at::Tensor& sin);

}  // namespace kivi
