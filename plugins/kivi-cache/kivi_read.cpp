#include "kivi_read.h"

#include <algorithm>

#include <ATen/ATen.h>

#include "quantize.h"
#include "tile_order.h"

namespace kivi::kivi_cache {

std::vector<PackedRun> packed_runs(const KiviParts& parts, int64_t b, int64_t p0, int64_t p1) {
  if (p1 <= p0) return {};
  if (!parts.paged()) return {PackedRun{b, p0, p1 - p0}};
  const int64_t page = parts.page_tokens;
  const auto* table = parts.block_table_cpu[b].data_ptr<int32_t>();
  std::vector<PackedRun> runs;
  for (int64_t p = p0; p < p1;) {
    const int64_t end = std::min(p1, (p / page + 1) * page);
    runs.push_back(PackedRun{table[p / page], p % page, end - p});
    p = end;
  }
  return runs;
}

at::Tensor gather_runs(const at::Tensor& t, const std::vector<PackedRun>& runs, int64_t unit) {
  std::vector<at::Tensor> pieces;
  for (const PackedRun& r : runs)
    pieces.push_back(t[r.index].narrow(1, r.first / unit, r.count / unit));
  return pieces.size() == 1 ? pieces[0] : at::cat(pieces, 1);
}

at::Tensor read_keys(const KiviParts& parts, int64_t b, int64_t p0, int64_t p1,
                     at::ScalarType dtype) {
  const int64_t quantized = parts.key_quantized[b], group = parts.group_size;
  const at::Tensor& residual = parts.key_residual;  // [B, H, slots, D]
  if (p1 <= p0)
    return at::empty({residual.size(1), 0, residual.size(3)}, residual.options().dtype(dtype));
  std::vector<at::Tensor> pieces;
  if (p0 < quantized) {
    // Whole groups covering [p0, min(p1, quantized)), then the wanted tokens of them.
    const int64_t end = std::min(p1, quantized);
    const int64_t g0 = p0 / group, g1 = (end + group - 1) / group;
    const std::vector<PackedRun> runs = packed_runs(parts, b, g0 * group, g1 * group);
    const at::Tensor words = gather_runs(parts.key_codes, runs, group).unsqueeze(0);
    const at::Tensor codes = keys_in_tile_order(words.size(3), group)
                                 ? unpack_keys_from_tile_order(words, parts.k_bits)
                                 : unpack_codes(words, parts.k_bits);  // [1, H, g1 - g0, D, G]
    at::Tensor keys =
        dequantize_unpacked_keys(codes, gather_runs(parts.key_scale, runs, group).unsqueeze(0),
                                 gather_runs(parts.key_min, runs, group).unsqueeze(0),
                                 dtype);  // [1, H, (g1 - g0) * G, D]
    pieces.push_back(keys[0].narrow(1, p0 - g0 * group, end - p0));
  }
  if (p1 > quantized) {
    // Key residual slot = position - key_quantized.
    const int64_t start = std::max(p0, quantized);
    pieces.push_back(parts.key_residual[b].narrow(1, start - quantized, p1 - start).to(dtype));
  }
  return pieces.size() == 1 ? pieces[0] : at::cat(pieces, 1);
}

at::Tensor read_values(const KiviParts& parts, int64_t b, int64_t p0, int64_t p1,
                       at::ScalarType dtype) {
  const int64_t quantized = parts.value_quantized[b];
  const at::Tensor& residual = parts.value_residual;  // [B, H, slots, D]
  if (p1 <= p0)
    return at::empty({residual.size(1), 0, residual.size(3)}, residual.options().dtype(dtype));
  std::vector<at::Tensor> pieces;
  if (p0 < quantized) {
    const int64_t end = std::min(p1, quantized);
    const std::vector<PackedRun> runs = packed_runs(parts, b, p0, end);
    const at::Tensor words = gather_runs(parts.value_codes, runs, 1).unsqueeze(0);
    const at::Tensor codes = values_in_tile_order(residual.size(3))
                                 ? unpack_values_from_tile_order(words, parts.v_bits)
                                 : unpack_codes(words, parts.v_bits);  // [1, H, n, D]
    at::Tensor values = dequantize_unpacked_values(
        codes, gather_runs(parts.value_scale, runs, 1).unsqueeze(0),
        gather_runs(parts.value_min, runs, 1).unsqueeze(0), parts.group_size, dtype);
    pieces.push_back(values[0]);
  }
  if (p1 > quantized) {
    // Value residual slot = position % slots (a ring).
    const int64_t start = std::max(p0, quantized);
    const at::Tensor& ring = parts.value_residual[b];  // [H, slots, D]
    const at::Tensor slots =
        at::arange(start, p1, at::TensorOptions().dtype(at::kLong).device(ring.device()))
            .remainder_(ring.size(1));
    pieces.push_back(ring.index_select(1, slots).to(dtype));
  }
  return pieces.size() == 1 ? pieces[0] : at::cat(pieces, 1);
}

DenseKV expand_kivi(const KiviParts& parts, const std::vector<int64_t>& lengths,
                    at::ScalarType dtype) {
  const int64_t batch = static_cast<int64_t>(lengths.size());
  const int64_t longest = lengths.empty() ? 0 : *std::max_element(lengths.begin(), lengths.end());
  const at::Tensor& residual = parts.key_residual;  // [B, H, slots, D]
  auto options = residual.options().dtype(dtype);
  DenseKV dense{at::zeros({batch, residual.size(1), longest, residual.size(3)}, options),
                at::zeros({batch, residual.size(1), longest, residual.size(3)}, options), lengths};
  for (int64_t b = 0; b < batch; ++b) {
    if (lengths[b] == 0) continue;
    dense.k[b].narrow(1, 0, lengths[b]).copy_(read_keys(parts, b, 0, lengths[b], dtype));
    dense.v[b].narrow(1, 0, lengths[b]).copy_(read_values(parts, b, 0, lengths[b], dtype));
  }
  return dense;
}

}  // namespace kivi::kivi_cache
