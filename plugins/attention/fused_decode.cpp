#include <algorithm>
#include <cstdint>

#include <ATen/ATen.h>

#include "backends.h"
#include "kivi/attention/output_buffer.h"
#include "kivi/util/error.h"

#ifdef KIVI_ATTENTION_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "cuda/dense_decode.h"
#endif

namespace kivi::attention {

std::optional<at::Tensor> fused_dense_decode(const at::Tensor& q, const CacheView& view,
                                             std::span<const int64_t> counts,
                                             const AttentionParams& params, std::string* why) {
  auto refuse = [&](const std::string& reason) -> std::optional<at::Tensor> {
    if (why) *why = reason;
    return std::nullopt;
  };
#ifdef KIVI_ATTENTION_WITH_CUDA
  if (!q.is_cuda() || !view.is_dense()) return refuse("not a GPU query over a dense view");
  const auto type = q.scalar_type();
  if (type != at::kHalf && type != at::kBFloat16) return refuse("not float16 or bfloat16");
  if (q.dim() != 4 || q.size(2) != 1) return refuse("not one query token per row");
  const at::Tensor& k = view.dense.k;
  const at::Tensor& v = view.dense.v;
  const int64_t batch = q.size(0), q_heads = q.size(1), dim = q.size(3);
  if (k.dim() != 4) return refuse("the cache's keys are not [B, H, capacity, D]");
  if (k.scalar_type() != type || v.scalar_type() != type || k.device() != q.device())
    return refuse("the cache holds another dtype or device");
  if (k.size(0) != batch || k.size(3) != dim || v.sizes() != k.sizes())
    return refuse("the cache's shape does not fit q");
  const std::string refusal =
      cuda::dense_decode_refusal(static_cast<int>(batch), static_cast<int>(q_heads),
                                 static_cast<int>(k.size(1)), static_cast<int>(dim));
  if (!refusal.empty()) return refuse(refusal);
  if (static_cast<int64_t>(view.lengths.size()) != batch ||
      (!counts.empty() && static_cast<int64_t>(counts.size()) != batch))
    return refuse("lengths or counts do not match the batch");
  // 16-byte loads: every row start aligned, D contiguous.
  auto aligned = [](const at::Tensor& t) {
    return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && t.stride(-1) == 1 &&
           t.stride(0) % 8 == 0 && t.stride(1) % 8 == 0 && t.stride(2) % 8 == 0;
  };
  if (!aligned(q) || !aligned(k) || !aligned(v)) return refuse("rows not 16-byte aligned");
  cuda::DenseDecode a;
  a.type = type == at::kHalf ? cuda::Elem::kHalf : cuda::Elem::kBFloat16;
  a.q = q.data_ptr();
  a.q_stride[0] = q.stride(0);
  a.q_stride[1] = q.stride(1);
  a.k = k.data_ptr();
  a.v = v.data_ptr();
  for (int i = 0; i < 3; ++i) {
    a.k_stride[i] = k.stride(i);
    a.v_stride[i] = v.stride(i);
  }
  a.batch = static_cast<int>(batch);
  a.q_heads = static_cast<int>(q_heads);
  a.kv_heads = static_cast<int>(k.size(1));
  a.dim = static_cast<int>(dim);
  a.scale = static_cast<float>(params.scale);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t count = counts.empty() ? 1 : counts[b], length = view.lengths[b];
    if (count > 1) return refuse("more than one new token in a row");
    if (count > length || length > k.size(2))
      return refuse("a row's length does not fit the cache");
    if (length > cuda::kDecodeMaxKeys)
      return refuse("a row of more than " + std::to_string(cuda::kDecodeMaxKeys) + " keys");
    // The new token (already stored, at length - 1) sees keys [first, length).
    const int64_t first =
        params.sliding_window > 0 ? std::max<int64_t>(0, length - params.sliding_window) : 0;
    a.first[b] = static_cast<int>(first);
    a.end[b] = count == 1 ? static_cast<int>(length) : static_cast<int>(first);
  }
  const int64_t workspace = cuda::plan_dense_decode(a);
  at::Tensor scratch;
  if (workspace > 0) {
    scratch = at::empty({workspace}, q.options().dtype(at::kFloat));
    a.workspace = scratch.data_ptr<float>();
  }
  at::Tensor out = usable_out(params, q);  // q: [B, Hq, 1, D]
  if (!out.defined()) out = at::empty({batch, q_heads, 1, dim}, q.options());
  a.out = out.data_ptr();
  const std::string error = cuda::dense_decode(a, at::cuda::getCurrentCUDAStream());
  check(error.empty(), error);
  return out;
#else
  (void)q, (void)view, (void)counts, (void)params;
  return refuse("this build of kivi has no CUDA support");
#endif
}

}  // namespace kivi::attention
