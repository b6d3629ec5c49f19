#include "fp8_cache.h"

#include <algorithm>

#include <ATen/ATen.h>

#include "kivi/cache/cache_checks.h"
#include "kivi/util/error.h"

namespace fp8_cache {
namespace {

constexpr double kE4m3Max = 448.0;
constexpr int64_t kChunk = 256;  // tokens the storage grows by, at least

// x [n, H, T, D] -> codes [n, H, T, D] e4m3 and scales [n, H, T] float32.
std::pair<at::Tensor, at::Tensor> quantize(const at::Tensor& x) {
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor scale = (xf.abs().amax(-1) / kE4m3Max).clamp_min(1e-12);
  return {(xf / scale.unsqueeze(-1)).to(at::kFloat8_e4m3fn), scale};
}

int64_t bytes(const at::Tensor& t) {
  return t.defined() ? static_cast<int64_t>(t.nbytes()) : 0;
}

}  // namespace

Fp8Cache::Fp8Cache(const kivi::CacheGeometry& geometry) : geometry_(geometry) {
  kivi::check_geometry(geometry_);
  kivi::check_not_paged(geometry_, "fp8 cache");
  layers_.resize(geometry_.num_layers);
  lengths_.assign(geometry_.num_layers, std::vector<int64_t>(geometry_.max_batch, 0));
  if (geometry_.max_tokens > 0)
    for (int64_t l = 0; l < geometry_.num_layers; ++l) ensure_capacity(l, geometry_.max_tokens);
}

void Fp8Cache::ensure_capacity(int64_t layer, int64_t tokens) {
  Fp8Parts& p = layers_[layer];
  const int64_t capacity = p.k.defined() ? p.k.size(2) : 0;
  if (tokens <= capacity) return;
  int64_t target = geometry_.max_tokens > 0
                       ? geometry_.max_tokens
                       : (std::max(tokens, 2 * capacity) + kChunk - 1) / kChunk * kChunk;
  const auto opts = at::TensorOptions().device(geometry_.device);
  const int64_t B = geometry_.max_batch, H = geometry_.num_kv_heads, D = geometry_.head_dim;
  Fp8Parts grown{at::zeros({B, H, target, D}, opts.dtype(at::kFloat8_e4m3fn)),
                 at::zeros({B, H, target, D}, opts.dtype(at::kFloat8_e4m3fn)),
                 at::zeros({B, H, target}, opts.dtype(at::kFloat)),
                 at::zeros({B, H, target}, opts.dtype(at::kFloat))};
  if (capacity > 0) {
    grown.k.narrow(2, 0, capacity).copy_(p.k);
    grown.v.narrow(2, 0, capacity).copy_(p.v);
    grown.k_scale.narrow(2, 0, capacity).copy_(p.k_scale);
    grown.v_scale.narrow(2, 0, capacity).copy_(p.v_scale);
  }
  p = std::move(grown);
}

void Fp8Cache::append(int64_t layer, const at::Tensor& k, const at::Tensor& v,
                      std::span<const int64_t> new_counts) {
  kivi::check(layer >= 0 && layer < geometry_.num_layers,
              "fp8 cache: layer " + std::to_string(layer) + " out of range");
  kivi::check_append_inputs(geometry_, k, v, new_counts, "fp8 cache");
  std::vector<int64_t>& lengths = lengths_[layer];
  std::vector<int64_t> counts(geometry_.max_batch, k.size(2));
  if (!new_counts.empty()) counts.assign(new_counts.begin(), new_counts.end());
  int64_t needed = 0;
  for (int64_t b = 0; b < geometry_.max_batch; ++b)
    needed = std::max(needed, lengths[b] + counts[b]);
  kivi::check(
      geometry_.max_tokens == 0 || needed <= geometry_.max_tokens,
      "fp8 cache: " + std::to_string(needed) +
          " tokens in one sequence, over max_tokens = " + std::to_string(geometry_.max_tokens));
  ensure_capacity(layer, needed);
  Fp8Parts& p = layers_[layer];
  const auto [kc, ks] = quantize(k);
  const auto [vc, vs] = quantize(v);
  for (int64_t b = 0; b < geometry_.max_batch; ++b) {
    if (counts[b] == 0) continue;
    p.k[b].narrow(1, lengths[b], counts[b]).copy_(kc[b].narrow(1, 0, counts[b]));
    p.v[b].narrow(1, lengths[b], counts[b]).copy_(vc[b].narrow(1, 0, counts[b]));
    p.k_scale[b].narrow(1, lengths[b], counts[b]).copy_(ks[b].narrow(1, 0, counts[b]));
    p.v_scale[b].narrow(1, lengths[b], counts[b]).copy_(vs[b].narrow(1, 0, counts[b]));
    lengths[b] += counts[b];
  }
}

kivi::CacheView Fp8Cache::view(int64_t layer) const {
  kivi::CacheView view;
  view.format = kFormat;
  view.lengths = lengths_.at(layer);
  auto parts = std::make_shared<const Fp8Parts>(layers_[layer]);
  view.payload = parts;
  view.expand = [parts, lengths = view.lengths, dtype = geometry_.dtype] {
    const int64_t keys = lengths.empty() ? 0 : *std::max_element(lengths.begin(), lengths.end());
    auto [k, v] = dequantize(*parts, keys, dtype);
    return kivi::DenseKV{k, v, lengths};
  };
  return view;
}

void Fp8Cache::reorder(std::span<const int64_t> beam_index) {
  kivi::check_beam_index(geometry_, beam_index, "fp8 cache");
  const at::Tensor index =
      at::tensor(std::vector<int64_t>(beam_index.begin(), beam_index.end()), at::kLong);
  for (size_t l = 0; l < layers_.size(); ++l) {
    Fp8Parts& p = layers_[l];
    if (p.k.defined()) {
      const at::Tensor i = index.to(p.k.device());
      // index_select through the bytes: fp8 kernels are not available for every op and device.
      p.k = p.k.view(at::kByte).index_select(0, i).view(at::kFloat8_e4m3fn);
      p.v = p.v.view(at::kByte).index_select(0, i).view(at::kFloat8_e4m3fn);
      p.k_scale = p.k_scale.index_select(0, i);
      p.v_scale = p.v_scale.index_select(0, i);
    }
    const std::vector<int64_t> old = lengths_[l];
    for (size_t b = 0; b < beam_index.size(); ++b) lengths_[l][b] = old[beam_index[b]];
  }
}

void Fp8Cache::truncate(int64_t new_length, int64_t seq) {
  kivi::check(new_length >= 0,
              "fp8 cache: truncate to a negative length " + std::to_string(new_length));
  for (auto& lengths : lengths_)
    for (int64_t b = 0; b < geometry_.max_batch; ++b)
      if (seq < 0 || b == seq) lengths[b] = std::min(lengths[b], new_length);
}

void Fp8Cache::reset() {
  for (auto& lengths : lengths_) std::fill(lengths.begin(), lengths.end(), 0);
}

kivi::MemoryStats Fp8Cache::memory() const {
  kivi::MemoryStats s;
  for (const Fp8Parts& p : layers_) {
    s.payload_bytes += bytes(p.k) + bytes(p.v);
    s.scale_bytes += bytes(p.k_scale) + bytes(p.v_scale);
  }
  for (int64_t n : lengths_[0]) s.tokens += n;
  s.quantized_tokens = s.tokens;
  return s;
}

std::vector<std::pair<std::string, at::Tensor>> Fp8Cache::owned_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const std::string prefix = "layer" + std::to_string(l) + ".";
    const Fp8Parts& p = layers_[l];
    for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"k", &p.k},
                           {"v", &p.v},
                           {"k_scale", &p.k_scale},
                           {"v_scale", &p.v_scale}})
      if (t->defined()) out.emplace_back(prefix + name, *t);
  }
  return out;
}

kivi::CacheUsage Fp8Cache::usage() const {
  const int64_t H = geometry_.num_kv_heads, D = geometry_.head_dim;
  kivi::CacheUsage u;
  u.sequences = geometry_.max_batch;
  u.key_bits = u.value_bits = 8;
  u.quantizing = true;
  u.full_element_bits = 8 * static_cast<int64_t>(c10::elementSize(geometry_.dtype));
  for (int64_t n : lengths_[0]) u.tokens += n;
  u.key_quantized = u.value_quantized = u.tokens;
  for (const auto& lengths : lengths_)
    for (int64_t n : lengths) {
      u.elements += 2 * n * H * D;
      u.code_bytes += 2 * n * H * D;
      u.scale_bytes += 2 * n * H * 4;
    }
  return u;
}

kivi::CacheSpec Fp8CacheFactory::spec(const kivi::CacheGeometry& g) const {
  kivi::CacheSpec spec;
  spec.description = "fp8 e4m3, per-token scales";
  spec.code_bits = 8;
  spec.bytes_per_sequence = [g](int64_t tokens) {
    return g.num_layers * 2 * g.num_kv_heads * tokens * (g.head_dim + 4);
  };
  return spec;
}

}  // namespace fp8_cache
