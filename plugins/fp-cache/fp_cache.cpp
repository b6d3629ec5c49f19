#include "fp_cache.h"

#include <algorithm>
#include <numeric>

#include <ATen/ATen.h>

#include "kivi/cache/cache_checks.h"
#include "kivi/util/error.h"

#ifdef KIVI_FP_CACHE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "cuda/append_rows.h"
#endif

namespace kivi::fp_cache {
namespace {

// Both sides of an append in one kernel on the GPU (cuda/append_rows.h); false where it does
// not serve (the CPU, a build without CUDA, storage in another dtype, more than 64 rows).
bool cuda_append(const at::Tensor& k, const at::Tensor& v, at::Tensor& keys, at::Tensor& values,
                 const std::vector<int64_t>& lengths, const std::vector<int64_t>& counts) {
#ifdef KIVI_FP_CACHE_WITH_CUDA
  const int64_t batch = k.size(0);
  if (!k.is_cuda() || k.scalar_type() != keys.scalar_type() ||
      v.scalar_type() != keys.scalar_type() || batch > cuda::kAppendMaxRows || k.stride(3) != 1 ||
      v.stride(3) != 1 || keys.stride(3) != 1 || values.stride(3) != 1)
    return false;
  cuda::AppendRows a;
  a.k = k.data_ptr();
  a.v = v.data_ptr();
  a.keys = keys.data_ptr();
  a.values = values.data_ptr();
  for (int i = 0; i < 3; ++i) {
    a.k_stride[i] = k.stride(i);
    a.v_stride[i] = v.stride(i);
    a.keys_stride[i] = keys.stride(i);
    a.values_stride[i] = values.stride(i);
  }
  a.batch = static_cast<int>(batch);
  a.heads = static_cast<int>(k.size(1));
  a.tokens = static_cast<int>(k.size(2));
  a.dim = static_cast<int>(k.size(3));
  a.element_bytes = static_cast<int>(k.element_size());
  for (int64_t b = 0; b < batch; ++b) {
    a.position[b] = lengths[b];
    a.count[b] = static_cast<int>(counts[b]);
  }
  const std::string error = cuda::append_rows(a, at::cuda::getCurrentCUDAStream());
  check(error.empty(), error);
  return true;
#else
  (void)k, (void)v, (void)keys, (void)values, (void)lengths, (void)counts;
  return false;
#endif
}

}  // namespace

FpCache::FpCache(const CacheGeometry& geometry, at::ScalarType storage_dtype, int64_t chunk_tokens)
    : geometry_(geometry), storage_dtype_(storage_dtype), chunk_tokens_(chunk_tokens) {
  check_geometry(geometry_);
  check_not_paged(geometry_, "fp cache");
  keys_.resize(geometry_.num_layers);
  values_.resize(geometry_.num_layers);
  lengths_.assign(geometry_.num_layers, std::vector<int64_t>(geometry_.max_batch, 0));
  if (geometry_.max_tokens > 0)
    for (int64_t l = 0; l < geometry_.num_layers; ++l) ensure_capacity(l, geometry_.max_tokens);
}

void FpCache::check_layer(int64_t layer) const {
  check(layer >= 0 && layer < geometry_.num_layers, "fp cache: layer " + std::to_string(layer) +
                                                        " out of range [0, " +
                                                        std::to_string(geometry_.num_layers) + ")");
}

void FpCache::ensure_capacity(int64_t layer, int64_t tokens) {
  const int64_t capacity = keys_[layer].defined() ? keys_[layer].size(2) : 0;
  if (tokens <= capacity) return;
  // Grow geometrically in whole chunks so appends stay amortized O(1) per token.
  int64_t target = std::max(tokens, capacity * 2);
  if (geometry_.max_tokens > 0) target = std::max(tokens, std::min(target, geometry_.max_tokens));
  target = (target + chunk_tokens_ - 1) / chunk_tokens_ * chunk_tokens_;
  if (geometry_.max_tokens > 0) target = std::min(target, std::max(tokens, geometry_.max_tokens));
  auto options = at::TensorOptions().dtype(storage_dtype_).device(geometry_.device);
  const std::vector<int64_t> shape = {geometry_.max_batch, geometry_.num_kv_heads, target,
                                      geometry_.head_dim};
  at::Tensor k = at::zeros(shape, options);
  at::Tensor v = at::zeros(shape, options);
  if (capacity > 0) {
    k.narrow(2, 0, capacity).copy_(keys_[layer]);
    v.narrow(2, 0, capacity).copy_(values_[layer]);
  }
  keys_[layer] = std::move(k);
  values_[layer] = std::move(v);
}

void FpCache::append(int64_t layer, const at::Tensor& k, const at::Tensor& v,
                     std::span<const int64_t> new_counts) {
  check_append_inputs(geometry_, k, v, new_counts, "fp cache");  // the whole batch, not a range
  append_range(0, layer, k, v, new_counts);
}

void FpCache::append_range(int64_t first, int64_t layer, const at::Tensor& k, const at::Tensor& v,
                           std::span<const int64_t> new_counts) {
  check_layer(layer);
  const int64_t n = check_range_append_inputs(geometry_, first, k, v, new_counts, "fp cache");
  const int64_t new_tokens = k.size(2);
  // The range's rows: their lengths (updated at the end) and counts.
  std::vector<int64_t> lengths(lengths_[layer].begin() + first,
                               lengths_[layer].begin() + first + n);
  std::vector<int64_t> counts(n, new_tokens);
  if (!new_counts.empty()) counts.assign(new_counts.begin(), new_counts.end());

  int64_t needed = 0;
  for (int64_t r = 0; r < n; ++r) needed = std::max(needed, lengths[r] + counts[r]);
  check(geometry_.max_tokens == 0 || needed <= geometry_.max_tokens,
        "fp cache: appending would hold " + std::to_string(needed) +
            " tokens in one sequence, over max_tokens = " + std::to_string(geometry_.max_tokens));
  ensure_capacity(layer, needed);
  if (needed == 0) return;  // nothing stored and nothing to store (no storage yet either)
  at::Tensor keys = keys_[layer].narrow(0, first, n);      // [n, H, capacity, D], a view
  at::Tensor values = values_[layer].narrow(0, first, n);  // [n, H, capacity, D], a view
  auto commit = [&] {
    for (int64_t r = 0; r < n; ++r) lengths_[layer][first + r] += counts[r];
  };

  if (cuda_append(k, v, keys, values, lengths, counts)) return commit();
  const bool uniform =
      std::all_of(counts.begin(), counts.end(), [&](int64_t c) { return c == new_tokens; }) &&
      std::all_of(lengths.begin(), lengths.end(), [&](int64_t l) { return l == lengths[0]; });
  if (uniform) {
    // The common case (one prompt, or lock-step decode): one strided copy per tensor.
    keys.narrow(2, lengths[0], new_tokens).copy_(k);
    values.narrow(2, lengths[0], new_tokens).copy_(v);
  } else {
    for (int64_t r = 0; r < n; ++r) {
      if (counts[r] == 0) continue;
      keys[r].narrow(1, lengths[r], counts[r]).copy_(k[r].narrow(1, 0, counts[r]));
      values[r].narrow(1, lengths[r], counts[r]).copy_(v[r].narrow(1, 0, counts[r]));
    }
  }
  commit();
}

CacheView FpCache::view(int64_t layer) const {
  return view_range(layer, 0, geometry_.max_batch);
}

CacheView FpCache::view_range(int64_t layer, int64_t first, int64_t n) const {
  check_layer(layer);
  check_row_range(geometry_, first, n, "fp cache");
  CacheView view;
  view.lengths.assign(lengths_[layer].begin() + first, lengths_[layer].begin() + first + n);
  if (!keys_[layer].defined()) {
    // Nothing stored yet: an empty capacity of the right shape.
    auto options = at::TensorOptions().dtype(storage_dtype_).device(geometry_.device);
    const std::vector<int64_t> shape = {n, geometry_.num_kv_heads, 0, geometry_.head_dim};
    view.dense = DenseKV{at::empty(shape, options), at::empty(shape, options), view.lengths};
  } else if (first == 0 && n == geometry_.max_batch) {
    view.dense = DenseKV{keys_[layer], values_[layer], view.lengths};
  } else {
    view.dense =
        DenseKV{keys_[layer].narrow(0, first, n), values_[layer].narrow(0, first, n), view.lengths};
  }
  DenseKV dense = view.dense;
  view.expand = [dense] { return dense; };
  return view;
}

int64_t FpCache::length(int64_t seq) const {
  check(seq >= 0 && seq < geometry_.max_batch,
        "fp cache: sequence " + std::to_string(seq) + " out of range");
  return lengths_[0][seq];
}

void FpCache::reorder(std::span<const int64_t> beam_index) {
  check_beam_index(geometry_, beam_index, "fp cache");
  at::Tensor index =
      at::tensor(std::vector<int64_t>(beam_index.begin(), beam_index.end()), at::kLong)
          .to(geometry_.device);
  for (int64_t l = 0; l < geometry_.num_layers; ++l) {
    if (keys_[l].defined()) {
      keys_[l] = keys_[l].index_select(0, index);
      values_[l] = values_[l].index_select(0, index);
    }
    std::vector<int64_t> old = lengths_[l];
    for (size_t i = 0; i < beam_index.size(); ++i) lengths_[l][i] = old[beam_index[i]];
  }
}

void FpCache::truncate(int64_t new_length, int64_t seq) {
  check(new_length >= 0, "fp cache: truncate to a negative length " + std::to_string(new_length));
  check(seq < geometry_.max_batch, "fp cache: sequence " + std::to_string(seq) + " out of range");
  for (auto& lengths : lengths_)
    for (int64_t b = 0; b < geometry_.max_batch; ++b)
      if (seq < 0 || b == seq) lengths[b] = std::min(lengths[b], new_length);
}

void FpCache::reset() {
  for (auto& lengths : lengths_) std::fill(lengths.begin(), lengths.end(), 0);
}

MemoryStats FpCache::memory() const {
  MemoryStats stats;
  for (int64_t l = 0; l < geometry_.num_layers; ++l)
    if (keys_[l].defined()) stats.payload_bytes += keys_[l].nbytes() + values_[l].nbytes();
  stats.tokens = std::accumulate(lengths_[0].begin(), lengths_[0].end(), int64_t{0});
  stats.residual_tokens = stats.tokens;
  return stats;
}

std::vector<std::pair<std::string, at::Tensor>> FpCache::owned_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (int64_t l = 0; l < geometry_.num_layers; ++l) {
    if (!keys_[l].defined()) continue;
    out.emplace_back("layer" + std::to_string(l) + ".k", keys_[l]);
    out.emplace_back("layer" + std::to_string(l) + ".v", values_[l]);
  }
  return out;
}

CacheSpec FpCacheFactory::spec(const CacheGeometry& g) const {
  const int64_t element = c10::elementSize(storage_dtype_);
  CacheSpec spec;
  spec.description = c10::toString(storage_dtype_);
  spec.bytes_per_sequence = [g, element](int64_t tokens) {
    return 2 * g.num_layers * g.num_kv_heads * g.head_dim * tokens * element;
  };
  return spec;
}

std::unique_ptr<KVCache> FpCacheFactory::create(const CacheGeometry& geometry) const {
  return std::make_unique<FpCache>(geometry, storage_dtype_, chunk_tokens_);
}

}  // namespace kivi::fp_cache
