// The tail of a row for the tensor-core decode kernel: positions after its last tile packed on
// both sides (the residual windows and the tiles they straddle). Tail blocks give each warp 32
// of them; the warp stages their keys, then their values, as T rows in its shared memory (copied
// with cp.async from the residual windows, dequantized where a side is packed) and attends them
// with the same m16n8k16 MMAs and online softmax as a packed tile, so its state merges with the
// main warps' like any other warp's (decode_attention_mma.cuh).
#pragma once

#include <cstdint>
#include <type_traits>

#include "decode_attention.cuh"
#include "mma_fragments.cuh"
#include "tile_slots.cuh"

namespace kivi::kivi_cache::cuda {

// Where a row's data lives.
template <class T>
struct RowView {
  const uint32_t* key_codes;
  const T *key_scale, *key_min, *key_res;
  const uint32_t* value_codes;
  const T *value_scale, *value_min, *value_res;
  int length, kq, vq, group, group_log2, k_bits, v_bits, value_slots;
};

// Online softmax of row g over one tile's scores s[nt][j] (row g, tokens 8 nt + 2c + j, base-2
// logits, -inf for absent tokens): updates the running max m and this lane's share of the sum
// l, rescales the output accumulators, and leaves the probabilities in p.
template <int NT>
__device__ __forceinline__ void softmax_tile(const float (&s)[4][2], float& m, float& l,
                                             float (&o)[NT][2], float (&o_min)[2], float (&p)[4][2]) {
  float tile_max = fmaxf(fmaxf(fmaxf(s[0][0], s[0][1]), fmaxf(s[1][0], s[1][1])),
                         fmaxf(fmaxf(s[2][0], s[2][1]), fmaxf(s[3][0], s[3][1])));
  tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
  tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
  const float m_new = fmaxf(m, tile_max);
  const float correction = exp2f(m - m_new);
  m = m_new;
  l *= correction;
#pragma unroll
  for (int nt = 0; nt < 4; ++nt)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      p[nt][j] = exp2f(s[nt][j] - m_new);
      l += p[nt][j];
    }
  // Rescale only when some row's maximum moved (after the first tiles, it rarely does).
  if (__any_sync(0xffffffffu, correction != 1.0f)) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      o[nt][0] *= correction;
      o[nt][1] *= correction;
    }
    o_min[0] *= correction;
    o_min[1] *= correction;
  }
}

// T elements per staged row: 16-byte aligned rows whose fragment loads hit distinct banks.
template <int DIM>
inline constexpr int kTailStride = DIM + 8;
template <int DIM>
inline constexpr int kTailBytes = kTile * kTailStride<DIM> * 2;  // one warp's staged rows

// Copies (cp.async) position t0 + r's residual row `source(p)` into rows_s[r] for the rows
// `wanted(p)` selects, and zeros the rows past t1. Every lane issues its share first.
template <int DIM, class T, class Wanted, class Source>
__device__ __forceinline__ void copy_tail_rows(T* rows_s, int t0, int t1, Wanted wanted, Source source) {
  constexpr int kChunks = DIM / 8;  // 16-byte chunks per row
  const int lane = threadIdx.x % 32;
#pragma unroll 4
  for (int i = lane; i < kTile * kChunks; i += 32) {
    const int r = i / kChunks, chunk = i % kChunks, p = t0 + r;
    T* dst = rows_s + r * kTailStride<DIM> + 8 * chunk;
    if (p >= t1)
      *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
    else if (wanted(p))
      copy_async16(dst, source(p) + 8 * chunk);
  }
  copy_async_commit();
}

// Attention of row g's query heads over positions [t0, t1) (t1 - t0 <= 32) of this warp's tail
// tile: the running state (m, l, o) of the warp goes on as after a packed tile. rows_s: the
// warp's kTailBytes<DIM> of shared memory.
template <class T, int DIM>
__device__ void decode_tail_tile(const RowView<T>& row, int t0, int t1, const uint32_t (*q_frag)[2],
                                 float score_scale, T* rows_s, float& m, float& l,
                                 float (&o)[DIM / 8][2], float (&o_min)[2]) {
  constexpr int KT = DIM / 16, NT = DIM / 8, S = kTailStride<DIM>;
  const int lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;

  // ---- keys: the tile is all residual or all packed (kq is a multiple of 32)
  copy_tail_rows<DIM>(rows_s, t0, t1, [&](int p) { return p >= row.kq; },
                      [&](int p) { return row.key_res + int64_t{p - row.kq} * DIM; });
  if (t0 < row.kq && t0 + lane < t1) {  // packed: lane dequantizes position t0 + lane
    const int p = t0 + lane, gi = p >> row.group_log2, t = p & (row.group - 1);
    const uint32_t* block = row.key_codes + int64_t{gi} * DIM * (row.group * row.k_bits / 32);
    const T* scale = row.key_scale + int64_t{gi} * DIM;
    const T* minimum = row.key_min + int64_t{gi} * DIM;
    const uint32_t mask = (1u << row.k_bits) - 1u;
    for (int d0 = 0; d0 < DIM; d0 += 8) {  // 8 channels' loads in flight, then their uses
      uint32_t words[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        int word, bit;
        key_tile_slot(d0 + j, t, DIM, row.k_bits, word, bit);
        words[j] = __ldg(block + word) >> bit;
      }
      const uint4 s8 = __ldg(reinterpret_cast<const uint4*>(scale + d0));
      const uint4 m8 = __ldg(reinterpret_cast<const uint4*>(minimum + d0));
      const T* sv = reinterpret_cast<const T*>(&s8);
      const T* mv = reinterpret_cast<const T*>(&m8);
#pragma unroll
      for (int j = 0; j < 8; ++j)
        rows_s[lane * S + d0 + j] = from_float<T>(fmaf(static_cast<float>(words[j] & mask), to_float(sv[j]), to_float(mv[j])));
    }
  }
  copy_async_wait<0>();
  __syncwarp();
  // scores: A = the queries (rows 0..7), B = K^T: b0 = K[token 8 nt + g][channels 16 kt + 2c, +1]
  float acc[4][2];
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) acc[nt][0] = acc[nt][1] = 0.0f;
#pragma unroll
  for (int kt = 0; kt < KT; ++kt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const T* k_row = rows_s + (8 * nt + g) * S + 16 * kt + 2 * c;
      mma_rows8<T>(acc[nt], q_frag[kt][0], q_frag[kt][1], *reinterpret_cast<const uint32_t*>(k_row),
                   *reinterpret_cast<const uint32_t*>(k_row + 8));
    }
  float s[4][2], p[4][2];
#pragma unroll
  for (int nt = 0; nt < 4; ++nt)
#pragma unroll
    for (int j = 0; j < 2; ++j) s[nt][j] = t0 + 8 * nt + 2 * c + j < t1 ? acc[nt][j] * score_scale : -INFINITY;
  softmax_tile<NT>(s, m, l, o, o_min, p);
  __syncwarp();  // every lane is done with the keys: the rows take the values

  // ---- values: residual rows copied, packed rows (p < vq) dequantized by their lane
  copy_tail_rows<DIM>(rows_s, t0, t1, [&](int p) { return p >= row.vq; },
                      [&](int p) { return row.value_res + int64_t{p % row.value_slots} * DIM; });
  if (t0 + lane < min(t1, row.vq)) {
    const int p = t0 + lane, groups_log2 = __ffs(DIM) - 1 - row.group_log2;
    const uint32_t* codes = row.value_codes + int64_t{p} * (DIM * row.v_bits / 32);
    const uint32_t mask = (1u << row.v_bits) - 1u;
    for (int d0 = 0; d0 < DIM; d0 += 8) {  // 8 channels of one group: loads first, then uses
      uint32_t words[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        int word, bit;
        value_tile_slot(d0 + j, DIM, row.v_bits, word, bit);
        words[j] = __ldg(codes + word) >> bit;
      }
      const int64_t at = (int64_t{p} << groups_log2) + (d0 >> row.group_log2);
      const float scale = to_float(row.value_scale[at]), minimum = to_float(row.value_min[at]);
#pragma unroll
      for (int j = 0; j < 8; ++j)
        rows_s[lane * S + d0 + j] = from_float<T>(fmaf(static_cast<float>(words[j] & mask), scale, minimum));
    }
  }
  copy_async_wait<0>();
  __syncwarp();
  // output: A = P (rows 0..7, tokens 16 kt + 2c + {0, 1} and + 8), B = V: b0 = V[tokens 16 kt +
  // 2c, +1][channel 8 nt + g]
#pragma unroll
  for (int kt = 0; kt < 2; ++kt) {
    const uint32_t pa0 = pack_pair<T>(p[2 * kt][0], p[2 * kt][1]);
    const uint32_t pa2 = pack_pair<T>(p[2 * kt + 1][0], p[2 * kt + 1][1]);
    // bf16: P = its rounding + the remainder, two MMAs (P's 8-bit mantissa alone costs too much)
    constexpr bool kSplitP = !std::is_same_v<T, __half>;
    uint32_t pl0 = 0u, pl2 = 0u;
    if constexpr (kSplitP) {
      const float2 h0 = pair_to_float2(pa0, T{}), h2 = pair_to_float2(pa2, T{});
      pl0 = pack_pair<T>(p[2 * kt][0] - h0.x, p[2 * kt][1] - h0.y);
      pl2 = pack_pair<T>(p[2 * kt + 1][0] - h2.x, p[2 * kt + 1][1] - h2.y);
    }
    const T* v0 = rows_s + (16 * kt + 2 * c) * S + g;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const uint16_t* x = reinterpret_cast<const uint16_t*>(v0 + 8 * nt);
      const uint32_t b0 = uint32_t(x[0]) | (uint32_t(x[S]) << 16);
      const uint32_t b1 = uint32_t(x[8 * S]) | (uint32_t(x[9 * S]) << 16);
      mma_rows8<T>(o[nt], pa0, pa2, b0, b1);
      if constexpr (kSplitP) mma_rows8<T>(o[nt], pl0, pl2, b0, b1);
    }
  }
  __syncwarp();  // the rows are free again
}

}  // namespace kivi::kivi_cache::cuda
