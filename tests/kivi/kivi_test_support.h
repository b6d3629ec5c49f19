// Shared by the KIVI tests: small geometries, the research code's split rules written out
// independently of the cache (llama_kivi.py's prompt branch and decode step), and the dense
// K/V a view must expand to for a given split.
#pragma once

#include <ATen/ATen.h>

#include "kivi_cache.h"
#include "quantize.h"

namespace kivi::test {

inline CacheGeometry small_geometry(int64_t batch = 1, int64_t max_tokens = 0,
                                    at::ScalarType dtype = at::kFloat) {
  CacheGeometry g;
  g.num_layers = 1;
  g.num_kv_heads = 2;
  g.head_dim = 32;
  g.max_batch = batch;
  g.max_tokens = max_tokens;
  g.dtype = dtype;
  return g;
}

inline kivi_cache::KiviOptions small_options(int64_t k_bits, int64_t v_bits,
                                             int64_t residual = 64) {
  kivi_cache::KiviOptions o;
  o.k_bits = k_bits;
  o.v_bits = v_bits;
  o.group_size = 16;
  o.residual_length = residual;
  o.chunk_tokens = 40;
  return o;
}

// What the research code holds for one sequence: quantized keys / values, total length.
struct ResearchState {
  int64_t key_quantized = 0, value_quantized = 0, length = 0;
};

// llama_kivi.py, prefill branch (residual_length R > 0).
inline ResearchState after_prompt(int64_t prompt, int64_t r) {
  ResearchState s;
  s.length = prompt;
  if (prompt % r != 0) {
    s.key_quantized = prompt < r ? 0 : prompt - prompt % r;
  } else {
    s.key_quantized = prompt;
  }
  s.value_quantized = prompt <= r ? 0 : prompt - r;
  return s;
}

// llama_kivi.py, decode branch: attend over state + the new token, then flush.
inline ResearchState after_step(ResearchState s, int64_t r) {
  s.length += 1;
  if (s.length - s.key_quantized == r) s.key_quantized = s.length;
  if (s.length - s.value_quantized > r) s.value_quantized += 1;
  return s;
}

// Dense K/V ([1, H, length, D]) of one sequence whose tokens are k, v ([1, H, >= length, D]),
// with the first key_quantized keys and value_quantized values quantized.
inline std::pair<at::Tensor, at::Tensor> expected_dense(const at::Tensor& k, const at::Tensor& v,
                                                        const kivi_cache::KiviOptions& o,
                                                        int64_t key_quantized,
                                                        int64_t value_quantized, int64_t length) {
  using namespace kivi_cache;
  at::Tensor keys = k.narrow(2, 0, length).clone();
  at::Tensor values = v.narrow(2, 0, length).clone();
  if (key_quantized > 0) {
    const PackedKeys q = quantize_keys(k.narrow(2, 0, key_quantized), o.group_size, o.k_bits);
    keys.narrow(2, 0, key_quantized)
        .copy_(dequantize_keys(q.codes, q.scale, q.min, o.group_size, o.k_bits, k.scalar_type()));
  }
  if (value_quantized > 0) {
    const PackedValues q = quantize_values(v.narrow(2, 0, value_quantized), o.group_size, o.v_bits);
    values.narrow(2, 0, value_quantized)
        .copy_(dequantize_values(q.codes, q.scale, q.min, o.group_size, o.v_bits, v.scalar_type()));
  }
  return {keys, values};
}

// Row b of a view expanded, [1, H, length, D].
inline std::pair<at::Tensor, at::Tensor> expanded_row(const KVCache& cache, int64_t b) {
  const DenseKV d = cache.view(0).expand();
  const int64_t n = d.lengths[b];
  return {d.k.narrow(0, b, 1).narrow(2, 0, n), d.v.narrow(0, b, 1).narrow(2, 0, n)};
}

}  // namespace kivi::test
