// The quantizer's arithmetic on the device, shared by the flush kernels (quantize_pack.cu) and
// the decode-step append (decode_append.cu), so both write the same codes, scales and minima.
// It computes what quantize.h's ATen ops compute, op by op in float with one rounding to the
// storage type after each (ATen's "opmath" for fp16/bf16).
#pragma once

#include <cmath>
#include <cstdint>

#include "device_types.cuh"
#include "tile_slots.cuh"

namespace kivi::kivi_cache::cuda {

struct GroupQuant {
  float min, scale, max_code;
};

template <class T>
__device__ __forceinline__ GroupQuant group_quant(float lo, float hi, int bits) {
  const float max_code = static_cast<float>((1 << bits) - 1);
  float scale = round_to<T>(round_to<T>(hi - lo) / max_code);
  if (isinf(scale) && isfinite(lo) && isfinite(hi))
    scale = round_to<T>(round_to<T>(hi / max_code) - round_to<T>(lo / max_code));
  return {lo, scale, max_code};
}

template <class T>
__device__ __forceinline__ uint32_t quant_code(float x, const GroupQuant& q) {
  if (q.scale == 0.0f) return 0;  // constant group: decodes to min exactly
  float c = round_to<T>(round_to<T>(x - q.min) / q.scale);
  c = fminf(fmaxf(c, 0.0f), q.max_code);
  return static_cast<uint32_t>(rintf(c));  // round half to even, as torch.round
}

// Min and max of `count` values at x[0], x[stride], ...
template <class T>
__device__ __forceinline__ void min_max(const T* x, int64_t stride, int count, float& lo,
                                        float& hi) {
  lo = INFINITY;
  hi = -INFINITY;
  for (int j = 0; j < count; ++j) {
    const float v = to_float(x[j * stride]);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
}

// Where code (channel d, token t) of a key group block goes: tile order (tile_slots.cuh) or
// the research packing (channel-major, tokens along the bits).
__device__ __forceinline__ void key_slot(int d, int t, int dim, int group, int bits, bool tile,
                                         int& word, int& bit) {
  if (tile) return key_tile_slot(d, t, dim, bits, word, bit);
  const int per_word = 32 / bits;
  word = d * (group * bits / 32) + t / per_word;
  bit = (t % per_word) * bits;
}

// Channel of code j of a value row: tile order or the research packing.
__device__ __forceinline__ int value_channel(int j, int dim, bool tile) {
  return tile ? value_tile_channel(j, dim) : j;
}

}  // namespace kivi::kivi_cache::cuda
