// Where a decode backend writes its result (AttentionParams::out): the caller's buffer when it
// can take a result shaped like the query (one new token per row: [B, q_heads, 1, head_dim]),
// else none, and the backend allocates. Decode graphs pass their input buffer, sparing a copy.
#pragma once

#include <ATen/Tensor.h>

#include "kivi/attention/attention.h"

namespace kivi {

// params.out when it is contiguous with q's sizes, dtype and device; else an undefined tensor.
inline at::Tensor usable_out(const AttentionParams& params, const at::Tensor& q) {
  const at::Tensor& out = params.out;
  const bool fits = out.defined() && out.sizes() == q.sizes() && out.is_contiguous() &&
                    out.scalar_type() == q.scalar_type() && out.device() == q.device();
  return fits ? out : at::Tensor();
}

}  // namespace kivi
