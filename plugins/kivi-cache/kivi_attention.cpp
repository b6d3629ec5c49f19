#include "kivi_attention.h"

#include <functional>
#include <limits>
#include <optional>
#include <utility>

#include <ATen/ATen.h>

#include "cuda_ops.h"
#include "kivi/attention/dense_masks.h"
#include "kivi/attention/output_buffer.h"
#include "kivi/util/error.h"
#include "kivi_read.h"

namespace kivi::kivi_cache {
namespace {

// Keys and values of positions [p0, p1) of one sequence: [H, p1 - p0, D] float32 each.
using BlockReader = std::function<std::pair<at::Tensor, at::Tensor>(int64_t p0, int64_t p1)>;

// One sequence's T queries at positions first, first + 1, ... attending causally over
// positions [0, first + T) read block by block. q: [Hq, T, D] float32; returns the same shape.
at::Tensor attend_row(const at::Tensor& q, int64_t first, int64_t kv_heads, int64_t block,
                      const BlockReader& read, const AttentionParams& params) {
  const int64_t q_heads = q.size(0), tokens = q.size(1), dim = q.size(2);
  check(q_heads % kv_heads == 0, "kivi attention: " + std::to_string(q_heads) +
                                     " query heads are not a multiple of " +
                                     std::to_string(kv_heads) + " kv heads");
  const int64_t rep = q_heads / kv_heads;
  const at::Tensor grouped = q.reshape({kv_heads, rep * tokens, dim});  // query head = h * rep + r
  const auto longs = at::TensorOptions().dtype(at::kLong).device(q.device());
  const at::Tensor q_pos = (at::arange(tokens, longs) + first).repeat({rep});  // [rep * T]
  const float neg_inf = -std::numeric_limits<float>::infinity();
  at::Tensor running_max = at::full({kv_heads, rep * tokens}, neg_inf, q.options());
  at::Tensor running_sum = at::zeros({kv_heads, rep * tokens}, q.options());
  at::Tensor acc = at::zeros({kv_heads, rep * tokens, dim}, q.options());

  const int64_t end = first + tokens;
  int64_t start = 0;
  if (params.sliding_window > 0)
    start = std::max<int64_t>(0, first - params.sliding_window + 1) / block * block;
  for (int64_t p0 = start; p0 < end; p0 += block) {
    const int64_t p1 = std::min(end, p0 + block);
    auto [keys, values] = read(p0, p1);                                             // [H, n, D]
    at::Tensor scores = at::bmm(grouped, keys.transpose(1, 2)).mul_(params.scale);  // [H, rT, n]
    const at::Tensor k_pos = at::arange(p0, p1, longs);
    at::Tensor hidden = k_pos.unsqueeze(0) > q_pos.unsqueeze(1);  // [rT, n]
    if (params.sliding_window > 0)
      hidden.logical_or_(k_pos.unsqueeze(0) <= (q_pos - params.sliding_window).unsqueeze(1));
    scores.masked_fill_(hidden.unsqueeze(0), neg_inf);
    const at::Tensor new_max = at::maximum(running_max, scores.amax(-1));
    // Rows that have seen no visible key yet keep max -inf; shift them by 0 instead.
    const at::Tensor shift = at::where(new_max.isinf(), at::zeros_like(new_max), new_max);
    const at::Tensor probs = (scores - shift.unsqueeze(-1)).exp_();
    const at::Tensor correction = (running_max - shift).exp_();
    running_sum = running_sum * correction + probs.sum(-1);
    acc = acc * correction.unsqueeze(-1) + at::bmm(probs, values);
    running_max = new_max;
  }
  return (acc / running_sum.unsqueeze(-1)).reshape({q_heads, tokens, dim});
}

// Keys and values of positions [p0, p1) of row b as `view` stores them: [H, p1 - p0, D] float32.
std::pair<at::Tensor, at::Tensor> read_stored(const CacheView& view, int64_t b, int64_t p0,
                                              int64_t p1) {
  if (view.format == kFormat) {
    const KiviParts& parts = view.payload_as<KiviParts>(kFormat);
    return {read_keys(parts, b, p0, p1, at::kFloat), read_values(parts, b, p0, p1, at::kFloat)};
  }
  return {view.dense.k[b].narrow(1, p0, p1 - p0).to(at::kFloat),
          view.dense.v[b].narrow(1, p0, p1 - p0).to(at::kFloat)};
}

std::vector<int64_t> row_counts(std::span<const int64_t> counts, int64_t batch, int64_t tokens) {
  std::vector<int64_t> out(batch, tokens);
  if (!counts.empty()) {
    check(static_cast<int64_t>(counts.size()) == batch,
          "kivi attention: counts has " + std::to_string(counts.size()) + " entries, expected " +
              std::to_string(batch));
    out.assign(counts.begin(), counts.end());
  }
  return out;
}

}  // namespace

at::Tensor KiviAttention::prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  std::span<const int64_t> counts,
                                  const AttentionParams& params) const {
  const int64_t batch = q.size(0), tokens = q.size(2);
  const std::vector<int64_t> rows = row_counts(counts, batch, tokens);
  // On the GPU, SDPA's flash kernels (the "sdpa" backend's prefill, shared through the core).
  if (q.is_cuda()) return attention::sdpa_prefill(q, k, v, counts, params);
  at::Tensor out = at::zeros_like(q);  // padded rows stay zero
  for (int64_t b = 0; b < batch; ++b) {
    if (rows[b] == 0) continue;
    const at::Tensor keys = k[b].to(at::kFloat), values = v[b].to(at::kFloat);  // [H, T, D]
    BlockReader read = [&](int64_t p0, int64_t p1) {
      return std::make_pair(keys.narrow(1, p0, p1 - p0), values.narrow(1, p0, p1 - p0));
    };
    const at::Tensor q_row = q[b].narrow(1, 0, rows[b]).to(at::kFloat);
    out[b]
        .narrow(1, 0, rows[b])
        .copy_(attend_row(q_row, 0, k.size(1), block_tokens_, read, params));
  }
  return out;
}

at::Tensor KiviAttention::decode(const at::Tensor& q, const CacheView& view,
                                 std::span<const int64_t> counts,
                                 const AttentionParams& params) const {
  const int64_t batch = q.size(0), tokens = q.size(2);
  const std::vector<int64_t> rows = row_counts(counts, batch, tokens);
  int64_t block = block_tokens_, kv_heads = 0;
  if (view.format == kFormat) {
    // Whole groups per block, so no key group is dequantized twice.
    const KiviParts& parts = view.payload_as<KiviParts>(kFormat);
    const int64_t group = parts.group_size;
    block = std::max(group, block / group * group);
    kv_heads = parts.key_residual.size(1);
  } else {
    kv_heads = view.dense.k.size(1);
  }
  for (int64_t b = 0; b < batch; ++b)
    check(rows[b] <= view.lengths[b],
          "kivi attention: row " + std::to_string(b) + " has " + std::to_string(rows[b]) +
              " new tokens but the cache holds " + std::to_string(view.lengths[b]) +
              " (append before decode)");
  // On the GPU, a decode step (one token per row) reads the packed cache in one fused kernel;
  // chunks and sliding windows take the blocked path below, which runs there too.
  if (q.is_cuda() && view.format == kFormat)
    if (std::optional<at::Tensor> fused =
            cuda_decode_attention(q, view.payload_as<KiviParts>(kFormat), view.lengths, rows,
                                  params, nullptr, usable_out(params, q)))
      return *fused;
  at::Tensor out = at::zeros_like(q);
  for (int64_t b = 0; b < batch; ++b) {
    if (rows[b] == 0) continue;
    const int64_t length = view.lengths[b];
    BlockReader read = [&](int64_t p0, int64_t p1) { return read_stored(view, b, p0, p1); };
    const at::Tensor q_row = q[b].narrow(1, 0, rows[b]).to(at::kFloat);
    out[b]
        .narrow(1, 0, rows[b])
        .copy_(attend_row(q_row, length - rows[b], kv_heads, block, read, params));
  }
  return out;
}

at::Tensor KiviAttention::chunk(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const CacheView& stored, std::span<const int64_t> counts,
                                const AttentionParams& params) const {
  const int64_t batch = q.size(0), tokens = q.size(2), kv_heads = k.size(1);
  const std::vector<int64_t> rows = row_counts(counts, batch, tokens);
  // On the GPU, fp16/bf16 chunks over the packed cache take the fused kernel (cuda/
  // chunk_attention.cuh); fp32, sliding windows and dense views the blocked path below.
  if (q.is_cuda() && stored.format == kFormat)
    if (std::optional<at::Tensor> fused = cuda_chunk_attention(
            q, k, v, stored.payload_as<KiviParts>(kFormat), stored.lengths, rows, params))
      return *fused;
  int64_t block = block_tokens_;
  if (stored.format == kFormat) {
    const int64_t group = stored.payload_as<KiviParts>(kFormat).group_size;
    block = std::max(group, block / group * group);
  }
  at::Tensor out = at::zeros_like(q);
  for (int64_t b = 0; b < batch; ++b) {
    if (rows[b] == 0) continue;
    const int64_t first = stored.lengths[b];  // the chunk's first position
    const at::Tensor keys = k[b].narrow(1, 0, rows[b]).to(at::kFloat);  // [H, n, D]
    const at::Tensor values = v[b].narrow(1, 0, rows[b]).to(at::kFloat);
    // Positions below `first` as stored, the chunk's own from k/v.
    BlockReader read = [&](int64_t p0, int64_t p1) {
      std::vector<at::Tensor> ks, vs;
      if (p0 < first) {
        auto [k_stored, v_stored] = read_stored(stored, b, p0, std::min(p1, first));
        ks.push_back(std::move(k_stored));
        vs.push_back(std::move(v_stored));
      }
      if (p1 > first) {
        const int64_t start = std::max(p0, first);
        ks.push_back(keys.narrow(1, start - first, p1 - start));
        vs.push_back(values.narrow(1, start - first, p1 - start));
      }
      return ks.size() == 1 ? std::make_pair(ks[0], vs[0])
                            : std::make_pair(at::cat(ks, 1), at::cat(vs, 1));
    };
    const at::Tensor q_row = q[b].narrow(1, 0, rows[b]).to(at::kFloat);
    out[b].narrow(1, 0, rows[b]).copy_(attend_row(q_row, first, kv_heads, block, read, params));
  }
  return out;
}

}  // namespace kivi::kivi_cache
