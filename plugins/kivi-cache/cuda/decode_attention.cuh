// The fused KIVI decode attention kernel on CUDA cores (flash-decoding over the packed cache):
// it serves fp32 storage and is the reference that decode_attention_mma.cuh (fp16, bf16 on
// tensor cores) is tested and timed against. Its warp helpers and workspace layout are shared.
//
// Grid: (splits, kv_heads, rows); a block of kWarps warps handles one kv head of one row over
// one contiguous range of the sequence, in tiles of 32 tokens (a tile never straddles the
// quantized/residual key boundary: key_quantized is a multiple of 32). All REP query heads
// that share the kv head are computed together, so every key and value is read once.
//
// Per tile, in one warp (lane = token for the scores, lane = channels for the output):
//   scores  packed keys: s[r] = sum_d (q[r][d] * scale[d]) * code[d][t] + sum_d q[r][d] * min[d]
//           (the products q * scale are formed once per group, so a code costs one FMA per
//           query head); residual keys: plain dot products;
//   softmax online, in base 2 (q is pre-scaled by softmax_scale * log2 e);
//   values  packed: lane owns D / 32 adjacent channels, which sit in one code word;
//           residual: read from the ring.
// Warps then merge their (max, sum, acc) in shared memory; the block writes one partial result
// per query head to the workspace, and a second kernel combines the splits.
#pragma once

#include <cfloat>

#include "block_table.cuh"
#include "device_types.cuh"
#include "tile_slots.cuh"

namespace kivi::kivi_cache::cuda {

inline constexpr int kDecodeWarps = 4;
inline constexpr int kTile = 32;  // tokens per tile (one warp's lanes)

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// N consecutive elements of T at p (16-byte aligned when N * sizeof(T) is a multiple of 16),
// as floats.
template <class T, int N>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[N]) {
  constexpr int kBytes = N * int(sizeof(T));
  if constexpr (kBytes % 16 == 0) {
    constexpr int kPer = 16 / int(sizeof(T));
#pragma unroll
    for (int v = 0; v < N / kPer; ++v) {
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p) + v);
      const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int j = 0; j < kPer; ++j) out[v * kPer + j] = to_float(e[j]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = to_float(p[j]);
  }
}

// Where the partial results of split s of (row b, query head hq) live in the workspace.
struct DecodeWorkspace {
  float* acc;  // [rows, q_heads, splits, D]
  float* max;  // [rows, q_heads, splits] (base-2 logits)
  float* sum;  // [rows, q_heads, splits]
  __host__ __device__ DecodeWorkspace(float* base, int rows, int q_heads, int dim, int splits)
      : acc(base),
        max(base + int64_t{rows} * q_heads * splits * dim),
        sum(max + int64_t{rows} * q_heads * splits) {}
};

template <class T, int DIM, int REP>
__global__ void __launch_bounds__(kDecodeWarps * 32)
    decode_attention_kernel(DecodeAttention a, int tiles_per_split) {
  constexpr int C = DIM / 32;  // output channels per lane
  const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rep = a.q_heads / a.kv_heads;  // <= REP
  const int length = a.length[b], kq = a.key_quantized[b], vq = a.value_quantized[b];
  const int tiles = (length + kTile - 1) / kTile;
  const int tile_begin = split * tiles_per_split;
  const int tile_end = min(tiles, tile_begin + tiles_per_split);

  __shared__ float q_s[DIM * REP];                      // [d][r], pre-scaled
  __shared__ float work_s[kDecodeWarps][DIM * REP];     // per warp: q * key scale; later its acc
  __shared__ float probs_s[kDecodeWarps][kTile * REP];  // per warp: [t][r]
  __shared__ float max_s[kDecodeWarps][REP], sum_s[kDecodeWarps][REP];

  const float q_scale = a.scale * 1.4426950408889634f;  // log2(e)
  for (int i = threadIdx.x; i < DIM * REP; i += blockDim.x) {
    const int d = i / REP, r = i % REP;
    float x = 0.0f;
    if (r < rep)
      x = to_float(
              static_cast<const T*>(a.q)[b * a.q_stride[0] + (h * rep + r) * a.q_stride[1] + d]) *
          q_scale;
    q_s[i] = x;
  }
  __syncthreads();

  float m[REP], l[REP], acc[REP][C];
#pragma unroll
  for (int r = 0; r < REP; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int c = 0; c < C; ++c) acc[r][c] = 0.0f;
  }

  const int group = a.group_size;
  const int k_words = group * a.k_bits / 32, v_words = DIM * a.v_bits / 32;
  const uint32_t k_mask = (1u << a.k_bits) - 1u, v_mask = (1u << a.v_bits) - 1u;
  // Packed parts at head h of page 0: a tile's page comes from the row's block table.
  const T* key_scale_h = static_cast<const T*>(a.key_scale) + h * a.key_scale_stride[1];
  const T* key_min_h = static_cast<const T*>(a.key_min) + h * a.key_scale_stride[1];
  const int32_t* key_codes_h = a.key_codes + h * a.key_codes_stride[1];
  const T* key_res = static_cast<const T*>(a.key_residual) + b * a.key_residual_stride[0] +
                     h * a.key_residual_stride[1];
  const int32_t* value_codes_h = a.value_codes + h * a.value_codes_stride[1];
  const T* value_scale_h = static_cast<const T*>(a.value_scale) + h * a.value_scale_stride[1];
  const T* value_min_h = static_cast<const T*>(a.value_min) + h * a.value_scale_stride[1];
  const T* value_res = static_cast<const T*>(a.value_residual) + b * a.value_residual_stride[0] +
                       h * a.value_residual_stride[1];
  const int c0 = lane * C;  // this lane's first output channel
  const int v_groups = DIM / group;
  float* work = work_s[warp];
  float* probs = probs_s[warp];

  for (int tile = tile_begin + warp; tile < tile_end; tile += kDecodeWarps) {
    const int p0 = tile * kTile, p = p0 + lane;
    // The tile's page (a page holds whole tiles): the packed parts' positions are local to it.
    const PackedAt page_at = p0 < max(kq, vq) ? packed_at(a.table, b, p0) : PackedAt{0, p0};
    const int64_t page = page_at.page,
                  page_shift =
                      page_at.local - p0;  // position p is token p + page_shift of the page
    const T* key_scale = key_scale_h + page * a.key_scale_stride[0];
    const T* key_min = key_min_h + page * a.key_scale_stride[0];
    const int32_t* key_codes = key_codes_h + page * a.key_codes_stride[0];
    // (value positions stay global: these point page_shift tokens before the page's token 0)
    const int32_t* value_codes =
        value_codes_h + page * a.value_codes_stride[0] + page_shift * v_words;
    const T* value_scale = value_scale_h + page * a.value_scale_stride[0] + page_shift * v_groups;
    const T* value_min = value_min_h + page * a.value_scale_stride[0] + page_shift * v_groups;
    float s[REP];
    if (p0 < kq) {
      // Packed keys of group g; this tile is tokens [o, o + 32) of it.
      const int g = page_at.local / group, o = page_at.local % group;
      float bias[REP];
#pragma unroll
      for (int r = 0; r < REP; ++r) bias[r] = 0.0f;
      for (int d = lane; d < DIM; d += 32) {
        const float sc = to_float(key_scale[g * DIM + d]), mn = to_float(key_min[g * DIM + d]);
#pragma unroll
        for (int r = 0; r < REP; ++r) {
          work[d * REP + r] = q_s[d * REP + r] * sc;
          bias[r] += q_s[d * REP + r] * mn;
        }
      }
#pragma unroll
      for (int r = 0; r < REP; ++r) s[r] = warp_sum(bias[r]);
      __syncwarp();
      const int32_t* codes = key_codes + int64_t{g} * DIM * k_words;  // the group's block
#pragma unroll 8
      for (int d = 0; d < DIM; ++d) {
        int word, bit;
        key_tile_slot(d, o + lane, DIM, a.k_bits, word, bit);
        const float code =
            static_cast<float>((static_cast<uint32_t>(__ldg(codes + word)) >> bit) & k_mask);
#pragma unroll
        for (int r = 0; r < REP; ++r) s[r] = fmaf(work[d * REP + r], code, s[r]);
      }
    } else {
#pragma unroll
      for (int r = 0; r < REP; ++r) s[r] = 0.0f;
      if (p < length) {
        const T* k = key_res + int64_t{p - kq} * DIM;
#pragma unroll
        for (int d0 = 0; d0 < DIM; d0 += 8) {
          float x[8];
          load_floats<T, 8>(k + d0, x);
#pragma unroll
          for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int r = 0; r < REP; ++r) s[r] = fmaf(q_s[(d0 + j) * REP + r], x[j], s[r]);
        }
      }
    }

    // Online softmax over this tile, per query head.
#pragma unroll
    for (int r = 0; r < REP; ++r) {
      const float score = p < length ? s[r] : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(score));  // finite: lane 0's token is valid
      const float correction = exp2f(m[r] - m_new);
      const float prob = exp2f(score - m_new);
      l[r] = l[r] * correction + prob;  // this lane's share; summed over the warp at the end
#pragma unroll
      for (int c = 0; c < C; ++c) acc[r][c] *= correction;
      m[r] = m_new;
      probs[lane * REP + r] = prob;
    }
    __syncwarp();

    const int count = min(kTile, length - p0);
    for (int t = 0; t < count; ++t) {
      const int pos = p0 + t;
      float v[C];
      if (pos < vq) {
        const int32_t* row = value_codes + int64_t{pos} * v_words;
        const int64_t at = int64_t{pos} * v_groups + c0 / group;
        const float sc = to_float(value_scale[at]), mn = to_float(value_min[at]);
#pragma unroll
        for (int c = 0; c < C; ++c) {
          int word, bit;
          value_tile_slot(c0 + c, DIM, a.v_bits, word, bit);
          v[c] =
              fmaf(static_cast<float>((static_cast<uint32_t>(__ldg(row + word)) >> bit) & v_mask),
                   sc, mn);
        }
      } else {
        load_floats<T, C>(value_res + int64_t{pos % a.value_slots} * DIM + c0, v);
      }
#pragma unroll
      for (int r = 0; r < REP; ++r) {
        const float pr = probs[t * REP + r];
#pragma unroll
        for (int c = 0; c < C; ++c) acc[r][c] = fmaf(pr, v[c], acc[r][c]);
      }
    }
    __syncwarp();  // work and probs are rewritten by the next tile
  }

  // Merge the warps: each publishes (max, sum, acc); the block combines them per query head.
#pragma unroll
  for (int r = 0; r < REP; ++r) {
    const float total = warp_sum(l[r]);
    if (lane == 0) {
      max_s[warp][r] = m[r];
      sum_s[warp][r] = total;
    }
  }
  __syncthreads();  // every warp is done with work_s: reuse it for the accumulators
#pragma unroll
  for (int r = 0; r < REP; ++r)
#pragma unroll
    for (int c = 0; c < C; ++c) work_s[warp][r * DIM + c0 + c] = acc[r][c];
  __syncthreads();

  DecodeWorkspace ws(a.workspace, a.rows, a.q_heads, DIM, a.splits);
  for (int i = threadIdx.x; i < rep * DIM; i += blockDim.x) {
    const int r = i / DIM, d = i % DIM;
    float m_all = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) m_all = fmaxf(m_all, max_s[w][r]);
    float total = 0.0f, out = 0.0f;
    if (m_all != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kDecodeWarps; ++w) {
        const float weight = exp2f(max_s[w][r] - m_all);
        total += sum_s[w][r] * weight;
        out += work_s[w][r * DIM + d] * weight;
      }
    }
    const int64_t slot = (int64_t{b} * a.q_heads + h * rep + r) * a.splits + split;
    ws.acc[slot * DIM + d] = out;
    if (d == 0) {
      ws.max[slot] = m_all;
      ws.sum[slot] = total;
    }
  }
}

template <class T, int DIM, int REP>
void launch_decode(const DecodeAttention& a, int tiles_per_split, cudaStream_t stream) {
  const dim3 grid(a.splits, a.kv_heads, a.rows);
  decode_attention_kernel<T, DIM, REP><<<grid, kDecodeWarps * 32, 0, stream>>>(a, tiles_per_split);
}

// (clang-format alternates between layouts of these macros: they keep their own)
// clang-format off
#define KIVI_DECLARE_DECODE(T, DIM, REP) \
  extern template void launch_decode<T, DIM, REP>(const DecodeAttention&, int, cudaStream_t);
#define KIVI_DECLARE_DECODE_ALL(T)                                                      \
  KIVI_DECLARE_DECODE(T, 64, 1) KIVI_DECLARE_DECODE(T, 64, 2) KIVI_DECLARE_DECODE(T, 64, 4)  \
  KIVI_DECLARE_DECODE(T, 64, 8) KIVI_DECLARE_DECODE(T, 128, 1) KIVI_DECLARE_DECODE(T, 128, 2) \
  KIVI_DECLARE_DECODE(T, 128, 4) KIVI_DECLARE_DECODE(T, 128, 8)
KIVI_DECLARE_DECODE_ALL(__half)
KIVI_DECLARE_DECODE_ALL(__nv_bfloat16)
KIVI_DECLARE_DECODE_ALL(float)
// clang-format on

}  // namespace kivi::kivi_cache::cuda
