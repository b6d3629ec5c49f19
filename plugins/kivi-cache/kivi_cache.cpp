#include "kivi_cache.h"

#include <algorithm>

#include <ATen/ATen.h>

#include "cuda_ops.h"
#include "kivi/cache/cache_checks.h"
#include "kivi/util/error.h"
#include "kivi_read.h"
#include "quantize.h"
#include "tile_order.h"

namespace kivi::kivi_cache {
namespace {

// Grows dimension 2 of `t` to at least `needed`, geometrically, in multiples of `step`.
void grow_dim2(at::Tensor& t, int64_t needed, int64_t step) {
  const int64_t capacity = t.size(2);
  if (needed <= capacity) return;
  int64_t target = std::max(needed, capacity * 2);
  target = (target + step - 1) / step * step;
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  shape[2] = target;
  at::Tensor grown = at::zeros(shape, t.options());
  grown.narrow(2, 0, capacity).copy_(t);
  t = std::move(grown);
}

at::Tensor ring_slots(int64_t p0, int64_t p1, int64_t slots, const at::Device& device) {
  return at::arange(p0, p1, at::TensorOptions().dtype(at::kLong).device(device)).remainder_(slots);
}

}  // namespace

KiviCache::KiviCache(const CacheGeometry& geometry, const KiviOptions& options)
    : geometry_(geometry), options_(options) {
  check_geometry(geometry_);
  check_options(options_, geometry_);
  const int64_t batch = geometry_.max_batch, heads = geometry_.num_kv_heads,
                dim = geometry_.head_dim;
  const int64_t group = options_.group_size;
  // Contiguous: every first index is a slot, sized for max_tokens. Paged: packed parts by page,
  // windows by slot.
  const int64_t packed = geometry_.pool_pages > 0 ? geometry_.pool_pages : batch;
  LayerCapacity c = preallocated_capacity(options_, geometry_.max_tokens);
  if (geometry_.pool_pages > 0) {
    const LayerCapacity page = page_capacity(options_), slot = slot_capacity(options_);
    c.key_groups = page.key_groups;
    c.value_tokens = page.value_tokens;
    c.key_slots = slot.key_slots;
    c.value_slots = slot.value_slots;
  }
  auto model = at::TensorOptions().dtype(geometry_.dtype).device(geometry_.device);
  auto words = model.dtype(at::kInt);
  layers_.resize(geometry_.num_layers);
  for (Layer& s : layers_) {
    KiviParts& p = s.parts;
    p.k_bits = options_.k_bits;
    p.v_bits = options_.v_bits;
    p.group_size = group;
    p.residual_length = options_.residual_length;
    if (options_.quantize_keys()) {
      p.key_codes =
          at::zeros({packed, heads, c.key_groups, dim, group * options_.k_bits / 32}, words);
      p.key_scale = at::zeros({packed, heads, c.key_groups, dim}, model);
      p.key_min = at::zeros({packed, heads, c.key_groups, dim}, model);
    }
    p.key_residual = at::zeros({batch, heads, c.key_slots, dim}, model);
    if (options_.quantize_values()) {
      p.value_codes = at::zeros({packed, heads, c.value_tokens, dim * options_.v_bits / 32}, words);
      p.value_scale = at::zeros({packed, heads, c.value_tokens, dim / group}, model);
      p.value_min = at::zeros({packed, heads, c.value_tokens, dim / group}, model);
    }
    p.value_residual = at::zeros({batch, heads, c.value_slots, dim}, model);
    p.key_quantized.assign(batch, 0);
    p.value_quantized.assign(batch, 0);
    s.length.assign(batch, 0);
  }
  if (geometry_.pool_pages > 0) {
    pool_ = std::make_unique<BlockPool>(geometry_.pool_pages, options_.page_tokens);
    pages_.resize(batch);
    hashes_.resize(batch);
    const int64_t columns = table_columns(options_, geometry_.max_tokens);
    table_cpu_ = at::zeros({batch, columns}, at::kInt);
    table_ = geometry_.device.is_cpu() ? table_cpu_ : at::zeros({batch, columns}, words);
    sync_table();
  }
}

std::vector<int32_t> KiviCache::page_ids(std::span<const int64_t> tokens, int64_t i) const {
  const int64_t page = options_.page_tokens;
  return std::vector<int32_t>(tokens.begin() + i * page, tokens.begin() + (i + 1) * page);
}

BlockPool::BlockId KiviCache::allocate_page(int64_t b) {
  const std::optional<BlockPool::BlockId> page = pool_->allocate();
  if (!page)
    throw Error("kivi cache: the page pool is exhausted (" + std::to_string(pool_->capacity()) +
                " pages of " + std::to_string(options_.page_tokens) +
                " tokens, all in use) while " + "sequence " + std::to_string(b) +
                " needs one more; admit fewer tokens or give " +
                "the cache a larger memory budget");
  return *page;
}

void KiviCache::own_page(int64_t b, size_t i) {
  const BlockPool::BlockId shared = pages_[b][i];
  if (pool_->writable(shared)) return;
  const BlockPool::BlockId own = allocate_page(b);
  for (Layer& s : layers_) {
    KiviParts& p = s.parts;
    for (at::Tensor* t :
         {&p.key_codes, &p.key_scale, &p.key_min, &p.value_codes, &p.value_scale, &p.value_min})
      if (t->defined()) (*t)[own].copy_((*t)[shared]);
  }
  pool_->release(shared);
  pages_[b][i] = own;
}

void KiviCache::prepare_pages(const Layer& s, std::span<const int64_t> counts) {
  const int64_t page = options_.page_tokens;
  bool changed = false;
  for (int64_t b = 0; b < geometry_.max_batch; ++b) {
    // What this append and the flushes it defers will quantize: up to the canonical split of the
    // new length. The first position it may write: the lower of the two quantized counts.
    const SequenceSplit split = canonical_split(options_, s.length[b] + counts[b]);
    const auto needed = static_cast<size_t>(
        pool_->blocks_for(std::max(split.key_quantized, split.value_quantized)));
    while (pages_[b].size() < needed) {
      pages_[b].push_back(allocate_page(b));
      changed = true;
    }
    const int64_t first = std::min(s.parts.key_quantized[b], s.parts.value_quantized[b]);
    for (auto i = static_cast<size_t>(first / page); i < needed; ++i) {
      const BlockPool::BlockId before = pages_[b][i];
      own_page(b, i);
      changed = changed || pages_[b][i] != before;
    }
  }
  if (changed) sync_table();
}

void KiviCache::trim_pages(int64_t b) {
  const KiviParts& p = layers_[0].parts;
  const auto keep =
      static_cast<size_t>(pool_->blocks_for(std::max(p.key_quantized[b], p.value_quantized[b])));
  while (pages_[b].size() > keep) {
    pool_->release(pages_[b].back());
    pages_[b].pop_back();
  }
  // A published page part of which the row no longer holds stays published (its tokens are
  // still what it holds), but is no longer the row's: a write copies it.
  const auto whole = static_cast<size_t>(std::min(p.key_quantized[b], p.value_quantized[b]) /
                                         options_.page_tokens);
  if (hashes_[b].size() > whole) hashes_[b].resize(whole);
}

void KiviCache::sync_table() {
  size_t columns = static_cast<size_t>(table_cpu_.size(1));
  for (const auto& row : pages_) columns = std::max(columns, row.size());
  if (static_cast<int64_t>(columns) > table_cpu_.size(1)) {  // max_tokens 0: the table grows
    const int64_t batch = geometry_.max_batch, width = static_cast<int64_t>(columns);
    table_cpu_ = at::zeros({batch, width}, at::kInt);
    table_ = geometry_.device.is_cpu() ? table_cpu_ : at::zeros({batch, width}, table_.options());
  }
  auto rows = table_cpu_.accessor<int32_t, 2>();
  for (size_t b = 0; b < pages_.size(); ++b)
    for (size_t i = 0; i < pages_[b].size(); ++i) rows[b][i] = pages_[b][i];
  // In stream order: kernels launched before read the table they were launched with.
  if (!geometry_.device.is_cpu()) table_.copy_(table_cpu_);
  for (Layer& s : layers_) {
    s.parts.block_table = table_;
    s.parts.block_table_cpu = table_cpu_;
    s.parts.page_tokens = options_.page_tokens;
  }
}

void KiviCache::check_layer(int64_t layer) const {
  check(layer >= 0 && layer < geometry_.num_layers, "kivi cache: layer " + std::to_string(layer) +
                                                        " out of range [0, " +
                                                        std::to_string(geometry_.num_layers) + ")");
}

void KiviCache::ensure_capacity(Layer& s, const LayerCapacity& needed) {
  KiviParts& p = s.parts;
  const int64_t chunk = options_.chunk_tokens;
  if (options_.quantize_keys()) {
    const int64_t step = (chunk + options_.group_size - 1) / options_.group_size;
    grow_dim2(p.key_codes, needed.key_groups, step);
    grow_dim2(p.key_scale, needed.key_groups, step);
    grow_dim2(p.key_min, needed.key_groups, step);
  } else {
    grow_dim2(p.key_residual, needed.key_slots, chunk);
  }
  if (options_.quantize_values()) {
    grow_dim2(p.value_codes, needed.value_tokens, chunk);
    grow_dim2(p.value_scale, needed.value_tokens, chunk);
    grow_dim2(p.value_min, needed.value_tokens, chunk);
  } else {
    grow_dim2(p.value_residual, needed.value_slots, chunk);
  }
}

template <class Fn>
void KiviCache::for_rows(const Layer& s, std::span<const int64_t> counts, Rows range, Fn fn) const {
  const KiviParts& p = s.parts;
  const int64_t b0 = range.b0;
  bool uniform = true;
  for (int64_t b = b0 + 1; b < b0 + range.n && uniform; ++b)
    uniform = s.length[b] == s.length[b0] && p.key_quantized[b] == p.key_quantized[b0] &&
              p.value_quantized[b] == p.value_quantized[b0] &&
              (counts.empty() || counts[b] == counts[b0]);
  if (uniform) {
    fn(range);
  } else {
    for (int64_t b = b0; b < b0 + range.n; ++b) fn(Rows{b, 1});
  }
}

void KiviCache::store_keys(Layer& s, Rows rows, int64_t group0, const at::Tensor& x) {
  if (!paged()) return store_keys_at(s, rows.b0, rows.n, group0, x);
  const int64_t group = options_.group_size;  // pages hold whole groups
  for (int64_t r = 0; r < rows.n; ++r) {
    int64_t offset = 0;  // into x's tokens
    for (const PackedRun& run :
         packed_runs(s.parts, rows.b0 + r, group0 * group, group0 * group + x.size(2))) {
      store_keys_at(s, run.index, 1, run.first / group,
                    x.narrow(0, r, 1).narrow(2, offset, run.count));
      offset += run.count;
    }
  }
}

void KiviCache::store_values(Layer& s, Rows rows, int64_t pos0, const at::Tensor& x) {
  if (!paged()) return store_values_at(s, rows.b0, rows.n, pos0, x);
  for (int64_t r = 0; r < rows.n; ++r) {
    int64_t offset = 0;  // into x's tokens
    for (const PackedRun& run : packed_runs(s.parts, rows.b0 + r, pos0, pos0 + x.size(2))) {
      store_values_at(s, run.index, 1, run.first, x.narrow(0, r, 1).narrow(2, offset, run.count));
      offset += run.count;
    }
  }
}

void KiviCache::store_keys_at(Layer& s, int64_t index0, int64_t n, int64_t group0,
                              const at::Tensor& x) {
  KiviParts& p = s.parts;
  const int64_t groups = x.size(2) / options_.group_size;
  at::Tensor codes = p.key_codes.narrow(0, index0, n).narrow(2, group0, groups);
  at::Tensor scale = p.key_scale.narrow(0, index0, n).narrow(2, group0, groups);
  at::Tensor min = p.key_min.narrow(0, index0, n).narrow(2, group0, groups);
  // On the GPU one kernel writes the codes in place; elsewhere ATen computes the same.
  if (cuda_store_keys(x, options_.group_size, options_.k_bits, codes, scale, min)) return;
  const PackedKeys q = quantize_keys(x, options_.group_size, options_.k_bits);
  codes.copy_(keys_in_tile_order(geometry_.head_dim, options_.group_size)
                  ? keys_to_tile_order(q.codes, options_.k_bits)
                  : q.codes);
  scale.copy_(q.scale);
  min.copy_(q.min);
}

void KiviCache::store_values_at(Layer& s, int64_t index0, int64_t n, int64_t pos0,
                                const at::Tensor& x) {
  KiviParts& p = s.parts;
  const int64_t tokens = x.size(2);
  at::Tensor codes = p.value_codes.narrow(0, index0, n).narrow(2, pos0, tokens);
  at::Tensor scale = p.value_scale.narrow(0, index0, n).narrow(2, pos0, tokens);
  at::Tensor min = p.value_min.narrow(0, index0, n).narrow(2, pos0, tokens);
  if (cuda_store_values(x, options_.group_size, options_.v_bits, codes, scale, min)) return;
  const PackedValues q = quantize_values(x, options_.group_size, options_.v_bits);
  codes.copy_(values_in_tile_order(geometry_.head_dim)
                  ? values_to_tile_order(q.codes, options_.v_bits)
                  : q.codes);
  scale.copy_(q.scale);
  min.copy_(q.min);
}

// Positions [p0, p1) whose ring slots are one run (no wrap) are a narrow() of the ring: a decode
// step's one token then costs no index tensor and no gather (on the GPU, 5 fewer launches per
// layer and step, which batch-1 decode notices).
at::Tensor KiviCache::value_window(const Layer& s, Rows rows, int64_t p0, int64_t p1) const {
  const at::Tensor ring = s.parts.value_residual.narrow(0, rows.b0, rows.n);  // [n, H, slots, D]
  const int64_t slots = ring.size(2), n = std::max<int64_t>(0, p1 - p0), first = p0 % slots;
  if (first + n <= slots) return ring.narrow(2, first, n);  // a view: callers only read it
  return ring.index_select(2, ring_slots(p0, p0 + n, slots, ring.device()));
}

void KiviCache::write_value_window(Layer& s, Rows rows, int64_t p0, const at::Tensor& x) {
  at::Tensor ring = s.parts.value_residual.narrow(0, rows.b0, rows.n);
  const int64_t slots = ring.size(2), n = x.size(2), first = p0 % slots;
  if (first + n <= slots)
    ring.narrow(2, first, n).copy_(x);
  else
    ring.index_copy_(2, ring_slots(p0, p0 + n, slots, ring.device()), x);
}

void KiviCache::settle_keys(Layer& s) {
  if (!options_.quantize_keys()) return;
  KiviParts& p = s.parts;
  const int64_t flush = options_.key_flush();
  for_rows(s, {}, Rows{0, geometry_.max_batch}, [&](Rows rows) {
    const int64_t kq = p.key_quantized[rows.b0];
    if (s.length[rows.b0] - kq < flush) return;
    store_keys(s, rows, kq / options_.group_size,
               p.key_residual.narrow(0, rows.b0, rows.n).narrow(2, 0, flush));
    for (int64_t r = rows.b0; r < rows.b0 + rows.n; ++r) p.key_quantized[r] = kq + flush;
  });
}

int64_t KiviCache::settled_values(const Layer& s, int64_t b) const {
  const int64_t vq = s.parts.value_quantized[b];
  return options_.quantize_values() ? std::max(vq, s.length[b] - options_.residual_length) : vq;
}

void KiviCache::settle(Layer& s) {
  settle_keys(s);
  KiviParts& p = s.parts;
  for_rows(s, {}, Rows{0, geometry_.max_batch}, [&](Rows rows) {
    const int64_t vq = p.value_quantized[rows.b0], new_vq = settled_values(s, rows.b0);
    if (new_vq == vq) return;
    store_values(s, rows, vq, value_window(s, rows, vq, new_vq));
    for (int64_t r = rows.b0; r < rows.b0 + rows.n; ++r) p.value_quantized[r] = new_vq;
  });
}

bool KiviCache::fused_decode_append(Layer& s, const at::Tensor& k, const at::Tensor& v,
                                    std::span<const int64_t> counts) {
  if (!k.is_cuda() || k.size(2) != 1) return false;
  KiviParts& p = s.parts;
  const int64_t batch = geometry_.max_batch;
  for (int64_t b = 0; b < batch; ++b)
    if (settled_values(s, b) - p.value_quantized[b] > 1) return false;  // not a decode step's
  settle_keys(s);  // every F steps: F keys at once, by the key flush kernel
  DecodeAppendRows rows;
  rows.key_slot.assign(batch, -1);
  rows.value_slot.assign(batch, 0);
  rows.flush_position.assign(batch, -1);
  if (paged()) rows.flush_page.assign(batch, -1);
  const int64_t slots = p.value_residual.size(2);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t length = s.length[b], vq = p.value_quantized[b];
    if (settled_values(s, b) > vq) {
      rows.flush_position[b] = static_cast<int>(vq);
      if (paged()) rows.flush_page[b] = pages_[b].at(vq / options_.page_tokens);
    }
    if (counts[b] == 0) continue;
    const int64_t kq = options_.quantize_keys() ? p.key_quantized[b] : 0;
    rows.key_slot[b] = static_cast<int>(length - kq);
    rows.value_slot[b] = static_cast<int>(length % slots);
  }
  if (!cuda_decode_append(k, v, p, rows)) return false;  // settle() finishes what is left
  for (int64_t b = 0; b < batch; ++b) {
    if (rows.flush_position[b] >= 0) p.value_quantized[b] += 1;
    s.length[b] += counts[b];
  }
  return true;
}

void KiviCache::append_rows(Layer& s, Rows rows, const at::Tensor& k, const at::Tensor& v,
                            int64_t count) {
  KiviParts& p = s.parts;
  const int64_t length = s.length[rows.b0], kq = p.key_quantized[rows.b0],
                vq = p.value_quantized[rows.b0];
  const int64_t new_length = length + count;
  // A chunk lands in the canonical state at once; a single decode token defers its flush.
  SequenceSplit target{kq, vq};
  if (count > 1) {
    target = canonical_split(options_, new_length);
    // Only a shared prefix (share_prefix) holds more quantized than the canonical split: keep it.
    target.key_quantized = std::max(target.key_quantized, kq);
    target.value_quantized = std::max(target.value_quantized, vq);
  }
  at::Tensor key_residual = p.key_residual.narrow(0, rows.b0, rows.n);  // [n, H, slots, D]

  if (!options_.quantize_keys()) {
    key_residual.narrow(2, length, count).copy_(k);
  } else if (target.key_quantized > kq) {
    // Residual keys + new keys, of which the leading whole flushes are quantized.
    const at::Tensor combined = at::cat({key_residual.narrow(2, 0, length - kq), k}, 2);
    const int64_t quantize = target.key_quantized - kq, rest = new_length - target.key_quantized;
    store_keys(s, rows, kq / options_.group_size, combined.narrow(2, 0, quantize));
    if (rest > 0) key_residual.narrow(2, 0, rest).copy_(combined.narrow(2, quantize, rest));
  } else {
    key_residual.narrow(2, length - kq, count).copy_(k);
  }

  if (!options_.quantize_values()) {
    p.value_residual.narrow(0, rows.b0, rows.n).narrow(2, length, count).copy_(v);
  } else {
    if (target.value_quantized > vq) {
      const at::Tensor ordered = at::cat({value_window(s, rows, vq, length), v}, 2);
      store_values(s, rows, vq, ordered.narrow(2, 0, target.value_quantized - vq));
    }
    const int64_t first = std::max(length, target.value_quantized);
    if (first < new_length)
      write_value_window(s, rows, first, v.narrow(2, first - length, new_length - first));
  }
  for (int64_t b = rows.b0; b < rows.b0 + rows.n; ++b) {
    s.length[b] = new_length;
    p.key_quantized[b] = target.key_quantized;
    p.value_quantized[b] = target.value_quantized;
  }
}

void KiviCache::append(int64_t layer, const at::Tensor& k, const at::Tensor& v,
                       std::span<const int64_t> new_counts) {
  check_append_inputs(geometry_, k, v, new_counts, "kivi cache");  // the whole batch, not a range
  append_range(0, layer, k, v, new_counts);
}

void KiviCache::append_range(int64_t first, int64_t layer, const at::Tensor& k, const at::Tensor& v,
                             std::span<const int64_t> new_counts) {
  check_layer(layer);
  const int64_t n = check_range_append_inputs(geometry_, first, k, v, new_counts, "kivi cache");
  const int64_t new_tokens = k.size(2);
  // Rows outside the range store nothing.
  std::vector<int64_t> counts(geometry_.max_batch, 0);
  for (int64_t r = 0; r < n; ++r)
    counts[first + r] = new_counts.empty() ? new_tokens : new_counts[r];
  Layer& s = layers_[layer];

  LayerCapacity needed;
  for (int64_t b = 0; b < geometry_.max_batch; ++b) {
    const int64_t length = s.length[b] + counts[b];
    check(geometry_.max_tokens == 0 || length <= geometry_.max_tokens,
          "kivi cache: appending would hold " + std::to_string(length) + " tokens in sequence " +
              std::to_string(b) + ", over max_tokens = " + std::to_string(geometry_.max_tokens));
    const SequenceSplit split = canonical_split(options_, length);
    needed.key_groups = std::max(needed.key_groups, split.key_quantized / options_.group_size);
    needed.value_tokens = std::max(needed.value_tokens, split.value_quantized);
    needed.key_slots = std::max(needed.key_slots, length);
    needed.value_slots = std::max(needed.value_slots, length);
  }
  // Growing keeps what is stored, so it may come before the flushes the last step deferred.
  if (paged())
    prepare_pages(s, counts);
  else
    ensure_capacity(s, needed);
  const at::Tensor keys = k.to(geometry_.dtype), values = v.to(geometry_.dtype);
  // A decode step (one token or none per row) on the GPU: one kernel for the whole batch.
  if (new_tokens == 1 && n == geometry_.max_batch && fused_decode_append(s, keys, values, counts))
    return;
  // Every row, not only the range's: a flush deferred by a decode step is due before the row's
  // next attention, so doing it now changes nothing that row reads.
  settle(s);
  for_rows(s, counts, Rows{first, n}, [&](Rows rows) {
    const int64_t count = counts[rows.b0];
    if (count == 0) return;
    append_rows(s, rows, keys.narrow(0, rows.b0 - first, rows.n).narrow(2, 0, count),
                values.narrow(0, rows.b0 - first, rows.n).narrow(2, 0, count), count);
  });
}

CacheView KiviCache::view(int64_t layer) const {
  return view_range(layer, 0, geometry_.max_batch);
}

CacheView KiviCache::view_range(int64_t layer, int64_t first, int64_t n) const {
  check_layer(layer);
  check_row_range(geometry_, first, n, "kivi cache");
  const Layer& s = layers_[layer];
  auto parts = std::make_shared<KiviParts>(s.parts);
  std::vector<int64_t> lengths = s.length;
  if (first != 0 || n != geometry_.max_batch) {
    auto rows = [&](std::vector<int64_t>& per_row) {
      per_row = std::vector<int64_t>(per_row.begin() + first, per_row.begin() + first + n);
    };
    rows(lengths);
    rows(parts->key_quantized);
    rows(parts->value_quantized);
    // Per-slot tensors narrow on their first dimension (a view, no copy); paged, the packed
    // parts are the pool's and stay whole, the block table's rows are the slots'.
    std::vector<at::Tensor*> per_slot = {&parts->key_residual, &parts->value_residual};
    if (parts->paged()) {
      per_slot.insert(per_slot.end(), {&parts->block_table, &parts->block_table_cpu});
    } else {
      per_slot.insert(per_slot.end(),
                      {&parts->key_codes, &parts->key_scale, &parts->key_min, &parts->value_codes,
                       &parts->value_scale, &parts->value_min});
    }
    for (at::Tensor* t : per_slot)
      if (t->defined()) *t = t->narrow(0, first, n);
  }
  CacheView view;
  view.format = kFormat;
  view.lengths = lengths;
  std::shared_ptr<const KiviParts> shared = parts;
  view.payload = shared;
  view.expand = [shared, lengths, dtype = geometry_.dtype] {
    return expand_kivi(*shared, lengths, dtype);
  };
  return view;
}

int64_t KiviCache::length(int64_t seq) const {
  check(seq >= 0 && seq < geometry_.max_batch, "kivi cache: sequence " + std::to_string(seq) +
                                                   " out of range [0, " +
                                                   std::to_string(geometry_.max_batch) + ")");
  return layers_[0].length[seq];
}

void KiviCache::reorder(std::span<const int64_t> beam_index) {
  check_beam_index(geometry_, beam_index, "kivi cache");
  const at::Tensor index =
      at::tensor(std::vector<int64_t>(beam_index.begin(), beam_index.end()), at::kLong)
          .to(geometry_.device);
  auto permute = [&](std::vector<int64_t>& rows) {
    const std::vector<int64_t> old = rows;
    for (size_t i = 0; i < beam_index.size(); ++i) rows[i] = old[beam_index[i]];
  };
  for (Layer& s : layers_) {
    KiviParts& p = s.parts;
    for (at::Tensor* t : {&p.key_codes, &p.key_scale, &p.key_min, &p.key_residual, &p.value_codes,
                          &p.value_scale, &p.value_min, &p.value_residual})
      // Paged, the packed parts stay where they are: the rows' tables are permuted below.
      if (t->defined() && (!paged() || t == &p.key_residual || t == &p.value_residual))
        *t = t->index_select(0, index);
    permute(s.length);
    permute(p.key_quantized);
    permute(p.value_quantized);
  }
  if (paged()) {
    // A fork shares its parent's pages; each row's new pages are retained before the old ones are
    // released, so a page both hold never passes through zero owners.
    std::vector<std::vector<BlockPool::BlockId>> next(beam_index.size());
    std::vector<std::vector<uint64_t>> next_hashes(beam_index.size());
    for (size_t i = 0; i < beam_index.size(); ++i) {
      next[i] = pages_[beam_index[i]];
      next_hashes[i] = hashes_[beam_index[i]];
      for (BlockPool::BlockId page : next[i]) pool_->retain(page);
    }
    for (const auto& row : pages_)
      for (BlockPool::BlockId page : row) pool_->release(page);
    pages_ = std::move(next);
    hashes_ = std::move(next_hashes);
    sync_table();
  }
}

void KiviCache::truncate_row(Layer& s, int64_t b, int64_t new_length) {
  KiviParts& p = s.parts;
  if (new_length >= s.length[b]) return;
  const SequenceSplit target = canonical_split(options_, new_length);
  const Rows row{b, 1};
  // Keys the new length puts back in the residual were quantized: they return dequantized.
  if (target.key_quantized < p.key_quantized[b]) {
    const at::Tensor keys = read_keys(p, b, target.key_quantized, new_length, geometry_.dtype);
    p.key_residual[b].narrow(1, 0, keys.size(1)).copy_(keys);
  }
  // Likewise the values that re-enter the window (their slots are free: the window is a ring
  // of more than R slots and the kept positions span at most R).
  const int64_t end = std::min(new_length, p.value_quantized[b]);
  if (target.value_quantized < end)
    write_value_window(
        s, row, target.value_quantized,
        read_values(p, b, target.value_quantized, end, geometry_.dtype).unsqueeze(0));
  p.key_quantized[b] = target.key_quantized;
  p.value_quantized[b] = target.value_quantized;
  s.length[b] = new_length;
}

void KiviCache::truncate(int64_t new_length, int64_t seq) {
  check(new_length >= 0, "kivi cache: truncate to a negative length " + std::to_string(new_length));
  check(seq < geometry_.max_batch, "kivi cache: sequence " + std::to_string(seq) + " out of range");
  for (Layer& s : layers_)
    for (int64_t b = 0; b < geometry_.max_batch; ++b)
      if (seq < 0 || b == seq) truncate_row(s, b, new_length);
  if (!paged()) return;
  for (int64_t b = 0; b < geometry_.max_batch; ++b)
    if (seq < 0 || b == seq) trim_pages(b);
  sync_table();
}

void KiviCache::reset() {
  for (Layer& s : layers_) {
    std::fill(s.length.begin(), s.length.end(), 0);
    std::fill(s.parts.key_quantized.begin(), s.parts.key_quantized.end(), 0);
    std::fill(s.parts.value_quantized.begin(), s.parts.value_quantized.end(), 0);
  }
  if (!paged()) return;
  for (auto& row : pages_) {
    for (BlockPool::BlockId page : row) pool_->release(page);
    row.clear();
  }
  for (auto& row : hashes_) row.clear();
  sync_table();
}

MemoryStats KiviCache::memory() const {
  MemoryStats stats;
  for (const Layer& s : layers_) {
    const KiviParts& p = s.parts;
    auto bytes = [](const at::Tensor& t) {
      return t.defined() ? static_cast<int64_t>(t.nbytes()) : 0;
    };
    stats.payload_bytes += bytes(p.key_codes) + bytes(p.value_codes);
    stats.scale_bytes +=
        bytes(p.key_scale) + bytes(p.key_min) + bytes(p.value_scale) + bytes(p.value_min);
    stats.residual_bytes += bytes(p.key_residual) + bytes(p.value_residual);
  }
  if (paged()) stats.workspace_bytes += static_cast<int64_t>(table_.nbytes());
  const Layer& first = layers_[0];
  for (int64_t b = 0; b < geometry_.max_batch; ++b) {
    const int64_t quantized =
        std::max(first.parts.key_quantized[b], first.parts.value_quantized[b]);
    stats.tokens += first.length[b];
    stats.quantized_tokens += quantized;
    stats.residual_tokens += first.length[b] - quantized;
  }
  return stats;
}

void KiviCache::publish(int64_t seq, std::span<const int64_t> tokens) {
  if (!paged()) return;
  const int64_t length = this->length(seq);  // checks seq
  const KiviParts& p = layers_[0].parts;     // every layer holds the same counts between passes
  const int64_t page = options_.page_tokens;
  const int64_t final_pages = std::min(p.key_quantized[seq], p.value_quantized[seq]) / page;
  auto& hashes = hashes_[seq];
  if (static_cast<int64_t>(hashes.size()) >= final_pages) return;
  check(static_cast<int64_t>(tokens.size()) >= final_pages * page,
        "kivi cache: publish of sequence " + std::to_string(seq) + " with " +
            std::to_string(tokens.size()) + " tokens, but it holds " + std::to_string(length));
  while (static_cast<int64_t>(hashes.size()) < final_pages) {
    const size_t i = hashes.size();
    hashes.push_back(pool_->publish(pages_[seq][i], i == 0 ? 0 : hashes[i - 1],
                                    page_ids(tokens, static_cast<int64_t>(i))));
  }
}

int64_t KiviCache::share_prefix(int64_t seq, std::span<const int64_t> tokens) {
  if (!paged()) return 0;
  check(length(seq) == 0 && pages_[seq].empty(),
        "kivi cache: share_prefix into sequence " + std::to_string(seq) + ", which holds " +
            std::to_string(length(seq)) + " tokens (expected an empty sequence)");
  const int64_t page = options_.page_tokens;
  // The tokens after the shared pages refill the windows (R of them), at least one is fed (the
  // last position's logits), and key flushes stay whole.
  const int64_t rest = std::max<int64_t>(options_.residual_length, 1);
  int64_t most = std::max<int64_t>(0, static_cast<int64_t>(tokens.size()) - rest) / page;
  while (most > 0 && most * page % options_.key_flush() != 0) --most;
  uint64_t previous = 0;
  for (int64_t i = 0; i < most; ++i) {
    const std::optional<BlockPool::Hit> hit = pool_->lookup(previous, page_ids(tokens, i));
    if (!hit) break;
    pages_[seq].push_back(hit->block);
    hashes_[seq].push_back(hit->hash);
    previous = hit->hash;
  }
  // Whole key flushes only: give back hits past the last whole flush.
  while (!pages_[seq].empty() &&
         static_cast<int64_t>(pages_[seq].size()) * page % options_.key_flush() != 0) {
    pool_->release(pages_[seq].back());
    pages_[seq].pop_back();
    hashes_[seq].pop_back();
  }
  const int64_t shared = static_cast<int64_t>(pages_[seq].size()) * page;
  if (shared == 0) return 0;
  for (Layer& s : layers_) {
    s.length[seq] = shared;
    s.parts.key_quantized[seq] = shared;
    s.parts.value_quantized[seq] = shared;
  }
  sync_table();
  return shared;
}

int64_t KiviCache::pages_for(int64_t tokens) const {
  if (!paged()) return 0;
  // What prepare_pages() takes for a sequence of that length: its canonical quantized positions.
  const SequenceSplit split = canonical_split(options_, tokens);
  return pool_->blocks_for(std::max(split.key_quantized, split.value_quantized));
}

PoolStats KiviCache::pool_stats() const {
  if (!paged()) return {};
  PoolStats stats;
  stats.pages = pool_->capacity();
  stats.page_tokens = pool_->block_tokens();
  stats.used = pool_->used();
  stats.peak_used = pool_->peak_used();
  stats.cached = pool_->cached();
  stats.page_bytes =
      geometry_.num_layers * layer_bytes(options_, geometry_, page_capacity(options_)).total();
  stats.shared = pool_->shared();
  stats.prefix_queries = pool_->lookups();
  stats.prefix_hits = pool_->hits();
  return stats;
}

std::vector<std::pair<std::string, at::Tensor>> KiviCache::owned_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (int64_t l = 0; l < geometry_.num_layers; ++l) {
    const KiviParts& p = layers_[l].parts;
    const std::string prefix = "layer" + std::to_string(l) + ".";
    for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"key_codes", &p.key_codes},
                           {"key_scale", &p.key_scale},
                           {"key_min", &p.key_min},
                           {"key_residual", &p.key_residual},
                           {"value_codes", &p.value_codes},
                           {"value_scale", &p.value_scale},
                           {"value_min", &p.value_min},
                           {"value_residual", &p.value_residual}})
      if (t->defined()) out.emplace_back(prefix + name, *t);
  }
  if (paged()) out.emplace_back("block_table", table_);
  return out;
}

CacheSpec KiviCacheFactory::spec(const CacheGeometry& geometry) const {
  check_options(options_, geometry);
  CacheSpec spec;
  spec.description = options_.description();
  spec.code_bits = 0.5 * static_cast<double>(options_.k_bits + options_.v_bits);
  spec.residual_length = options_.residual_length;
  spec.accounting_notes = accounting_notes(options_, geometry.dtype);
  spec.bytes_per_sequence = [options = options_, geometry](int64_t tokens) {
    return bytes_per_sequence(options, geometry, tokens);
  };
  if (options_.quantize_keys() && options_.quantize_values()) {  // it can page
    spec.page_tokens = options_.page_tokens;
    spec.bytes_per_page =
        geometry.num_layers * layer_bytes(options_, geometry, page_capacity(options_)).total();
    spec.bytes_per_slot =
        geometry.num_layers * layer_bytes(options_, geometry, slot_capacity(options_)).total() +
        4 * table_columns(options_, geometry.max_tokens);
  }
  return spec;
}

std::unique_ptr<KVCache> KiviCacheFactory::create(const CacheGeometry& geometry) const {
  return std::make_unique<KiviCache>(geometry, options_);
}

}  // namespace kivi::kivi_cache
