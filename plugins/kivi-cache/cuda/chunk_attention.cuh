// The fused KIVI chunk attention (fp16 and bf16 storage): a chunk's queries attend over the
// packed cache as stored and causally over the chunk's own full-precision K/V, flash-attention
// style on tensor cores.
//
// Grid (query tiles, splits, rows x kv heads). A block takes 64 query rows of one (row, kv head):
// query row R = token i * rep + GQA head j (token-major, so a tile's rows span few tokens and the
// causal part stays short), 16 rows per warp, the queries' A fragments in registers. It walks
// 32-position tiles of [0, first + its last token], its split's share of them:
//   - a tile packed on a side is copied raw (codes, scales, minima; cp.async, kChunkStages tiles
//     ahead) and dequantized ONCE per block into shared memory in T, x = code * scale + min with
//     one rounding (HFMA2 on pairs from code_convert.cuh's LOP3 conversion), which every query
//     row of the block then reuses: keys as rows [32][D], values transposed [D][32] (two tokens
//     of a channel are one code word pair in the tile order, tile_order.h);
//   - the other positions (residual windows, the chunk's own K/V, zeros past the end) are rows
//     copied with cp.async straight into the tile buffer one tile ahead; the few packed value
//     rows of the tile that holds value_quantized are dequantized row by row;
//   - S = Q K^T and O += P V with m16n8k16 MMAs (ldmatrix from XOR-swizzled rows), the causal
//     mask on tiles that reach the chunk, an online softmax in base 2 with float state.
// Two tile buffers alternate, so one barrier per tile separates dequantizing the next tile from
// the MMAs over this one. Splits write float partials (acc, max, sum) that chunk_dispatch.cu
// merges; one split writes the output directly.
//
// Numerics: the dequantized K/V and P are rounded to T once (bf16: ~3e-3 relative in the output,
// within the tests' 1e-2; fp16: ~4e-4); scores and sums accumulate in float.
#pragma once

#include <cstdint>
#include <type_traits>

#include "block_table.cuh"
#include "code_convert.cuh"
#include "device_types.cuh"
#include "mma_fragments.cuh"
#include "tile_slots.cuh"

namespace kivi::kivi_cache::cuda {

// Blocks per multiprocessor the register allocation must allow. At 3 (168 registers) the
// head_dim 128 instantiations spill a little; at 2 they take 227 to 239 registers, no spills.
#ifndef KIVI_CHUNK_MIN_BLOCKS
#define KIVI_CHUNK_MIN_BLOCKS 2
#endif

inline constexpr int kChunkWarps = kChunkQueryRows / 16;  // 16 query rows per warp
inline constexpr int kChunkThreads = 32 * kChunkWarps;
inline constexpr int kChunkTile = 32;  // positions per tile
inline constexpr int kChunkStages = 4;

// One packed tile as copied (byte offsets): the key codes of 32 tokens in tile order, their
// group's scale and min [D]; the value codes [32][D * VB / 32 words], scales and mins [32][D / G].
template <int DIM, int KB, int VB>
struct ChunkStage {
  static constexpr int kKeyCodes = 0;
  static constexpr int kKeyScale = kKeyCodes + 4 * DIM * KB;
  static constexpr int kKeyMin = kKeyScale + 2 * DIM;
  static constexpr int kValueCodes = kKeyMin + 2 * DIM;
  static constexpr int kValueScale = kValueCodes + 4 * DIM * VB;
  static constexpr int kValueMin = kValueScale + 2 * DIM;  // 32 tokens x at most D / 32 groups
  static constexpr int kBytes = kValueMin + 2 * DIM;
};

// One tile as the MMAs read it (T elements): keys [32][D]; values [32][D] (rows) or [D][32]
// (transposed, from packed codes). 64 * D * 2 bytes each; a buffer also holds the block's 64
// query rows [64][D] before the loop and its output after it.
template <int DIM>
struct ChunkBuffer {
  static constexpr int kKeys = 0, kValues = 32 * DIM, kElements = 64 * DIM;
};

template <int DIM, int KB, int VB>
inline constexpr int kChunkSmemBytes =
    2 * ChunkBuffer<DIM>::kElements * 2 + kChunkStages* ChunkStage<DIM, KB, VB>::kBytes;

// Element offset of (row r, column x) in [rows][DIM]: 16-byte chunk x / 8 XOR r % 8, so that
// ldmatrix's 8 rows of one chunk column hit distinct banks.
template <int DIM>
__device__ __forceinline__ int chunk_row_offset(int r, int x) {
  return r * DIM + (((x >> 3) ^ (r & 7)) << 3) + (x & 7);
}
// Element offset of (channel d, token t) in transposed values [DIM][32] (64-byte rows): chunk
// t / 8 XOR (d / 2) % 4, conflict-free for 8 consecutive channels.
__device__ __forceinline__ int chunk_vt_offset(int d, int t) {
  return d * 32 + (((t >> 3) ^ ((d >> 1) & 3)) << 3) + (t & 7);
}

// (lo, hi) 16-bit values as one pair register.
template <class T>
__device__ __forceinline__ uint32_t chunk_pair(const T* lo, const T* hi) {
  return static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(lo)) |
         (static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(hi)) << 16);
}

// Where the partials of split s live: sums [splits][rows][D], then maxima and softmax sums
// [splits][rows]; rows = (row, kv head) pairs x query tiles x kChunkQueryRows of the launch.
struct ChunkWorkspace {
  int64_t rows;
  float *acc, *max, *sum;
  __host__ __device__ ChunkWorkspace(float* base, int64_t partial_rows, int dim, int splits)
      : rows(partial_rows),
        acc(base),
        max(base + splits * partial_rows * dim),
        sum(max + splits * partial_rows) {}
};

// The block's row and kv head and what it needs of the row; every address is computed from the
// launch's arguments where it is used (they stay in the constant bank: no registers held across
// the loop for pointers the loop rarely needs).
struct ChunkRow {
  int b, h, first, count, kq, vq, group_log2;
};
template <class T>
__device__ __forceinline__ const T* chunk_at(const void* base, int64_t offset) {
  return static_cast<const T*>(base) + offset;
}

// Copies (cp.async) the packed parts of the tile at p0, page `at` (a tile lies in one page:
// pages hold whole groups of >= 32 tokens), into a stage: the keys if the tile is packed on the
// key side, the values if on the value side.
template <class T, int DIM, int KB, int VB>
__device__ __forceinline__ void issue_stage(const ChunkAttention& a, const ChunkRow& row, int p0,
                                            PackedAt at, unsigned char* stage) {
  using Stage = ChunkStage<DIM, KB, VB>;
  const bool keys = p0 + kChunkTile <= row.kq, values = p0 + kChunkTile <= row.vq;
  const int tid = threadIdx.x;
  if (keys) {
    const int gi = at.local >> row.group_log2;
    const int tile = (at.local - (gi << row.group_log2)) / kChunkTile;
    const uint32_t* codes = chunk_at<uint32_t>(
        a.key_codes, at.page * a.key_codes_stride[0] + row.h * a.key_codes_stride[1] +
                         (int64_t{gi} << row.group_log2) * (DIM * KB / 32) + tile * DIM * KB);
#pragma unroll
    for (int i = tid; i < DIM * KB / 4; i += kChunkThreads)
      copy_async16(stage + Stage::kKeyCodes + 16 * i, codes + 4 * i);
    const int64_t params =
        at.page * a.key_scale_stride[0] + row.h * a.key_scale_stride[1] + int64_t{gi} * DIM;
    if (tid < DIM / 8)
      copy_async16(stage + Stage::kKeyScale + 16 * tid, chunk_at<T>(a.key_scale, params + 8 * tid));
    else if (tid < DIM / 4)
      copy_async16(stage + Stage::kKeyMin + 16 * (tid - DIM / 8),
                   chunk_at<T>(a.key_min, params + 8 * (tid - DIM / 8)));
  }
  if (values) {
    const uint32_t* codes = chunk_at<uint32_t>(
        a.value_codes, at.page * a.value_codes_stride[0] + row.h * a.value_codes_stride[1] +
                           int64_t{at.local} * (DIM * VB / 32));
#pragma unroll
    for (int i = tid; i < DIM * VB / 4; i += kChunkThreads)
      copy_async16(stage + Stage::kValueCodes + 16 * i, codes + 4 * i);
    const int v_groups =
        DIM >> row.group_log2;  // 32 tokens x v_groups x 2 bytes: 4 v_groups chunks
    const int64_t params = at.page * a.value_scale_stride[0] + row.h * a.value_scale_stride[1] +
                           int64_t{at.local} * v_groups;
    if (tid < 4 * v_groups)
      copy_async16(stage + Stage::kValueScale + 16 * tid,
                   chunk_at<T>(a.value_scale, params + 8 * tid));
    else if (tid < 8 * v_groups)
      copy_async16(stage + Stage::kValueMin + 16 * (tid - 4 * v_groups),
                   chunk_at<T>(a.value_min, params + 8 * (tid - 4 * v_groups)));
  }
}

// Copies (cp.async) the rows of the tile at p0 that are not packed into the tile buffer: keys
// from the key residual (slot p - kq) or the chunk's own k, values from the ring (slot
// p % value_slots) or the chunk's own v; zeros past the chunk (p >= first + count) so that
// masked positions multiply finite values. Packed value rows are left to dequantize_rows.
template <class T, int DIM>
__device__ __forceinline__ void issue_rows(const ChunkAttention& a, const ChunkRow& row, int p0,
                                           T* buffer) {
  const bool keys = p0 + kChunkTile > row.kq, values = p0 + kChunkTile > row.vq;
  if (!keys && !values) return;
  constexpr int kChunks = DIM / 8;
  T* key_rows = buffer + ChunkBuffer<DIM>::kKeys;
  T* value_rows = buffer + ChunkBuffer<DIM>::kValues;
  const int64_t key_res = row.b * a.key_residual_stride[0] + row.h * a.key_residual_stride[1];
  const int64_t value_res = row.b * a.value_residual_stride[0] + row.h * a.value_residual_stride[1];
  const int64_t own_k = row.b * a.k_stride[0] + row.h * a.k_stride[1];
  const int64_t own_v = row.b * a.v_stride[0] + row.h * a.v_stride[1];
#pragma unroll 1
  for (int e = threadIdx.x; e < kChunkTile * kChunks; e += kChunkThreads) {
    const int r = e / kChunks, x = 8 * (e % kChunks), p = p0 + r;
    const bool stored = p < row.first, own = !stored && p - row.first < row.count;
    if (keys) {
      T* dst = key_rows + chunk_row_offset<DIM>(r, x);
      if (stored)
        copy_async16(dst, chunk_at<T>(a.key_residual,
                                      key_res + (p - row.kq) * a.key_residual_stride[2] + x));
      else if (own)
        copy_async16(dst, chunk_at<T>(a.k, own_k + (p - row.first) * a.k_stride[2] + x));
      else
        *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
    }
    if (values && p >= row.vq) {
      T* dst = value_rows + chunk_row_offset<DIM>(r, x);
      if (stored)
        copy_async16(dst,
                     chunk_at<T>(a.value_residual,
                                 value_res + (p % a.value_slots) * a.value_residual_stride[2] + x));
      else if (own)
        copy_async16(dst, chunk_at<T>(a.v, own_v + (p - row.first) * a.v_stride[2] + x));
      else
        *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
    }
  }
}

// Packed key tile (stage) -> key rows [32][D]. Item e is word e of the tile order: lane L = 4 g
// + c of the MMA layout owns words [L * LW, (L + 1) * LW), pair i of them = channels
// (16 kt + 8 hi + 2c, +1) at token 8 nt + g with i = (2 kt + hi) * 4 + nt (tile_order.h).
template <class T, int DIM, int KB>
__device__ __forceinline__ void dequantize_keys(const unsigned char* stage, int key_scale,
                                                T* key_rows) {
  constexpr int kLaneWords = DIM * KB / 32, kPer = 16 / KB;
  const uint32_t* words = reinterpret_cast<const uint32_t*>(stage);
  const uint32_t* scale2 = reinterpret_cast<const uint32_t*>(stage + key_scale);  // channel pairs
  const uint32_t* min2 = scale2 + DIM / 2;
  uint32_t* out = reinterpret_cast<uint32_t*>(key_rows);
  const int w = threadIdx.x % kLaneWords;  // (kLaneWords divides the block)
#pragma unroll 2
  for (int e = threadIdx.x; e < kChunkTile * kLaneWords; e += kChunkThreads) {
    const int lane = e / kLaneWords, g = lane / 4, c = lane % 4;
    uint32_t pairs[kPer];
    unpack_halves<T, KB>(words[e], pairs);
#pragma unroll
    for (int p = 0; p < kPer; ++p) {
      const int i = w * kPer + p, kt = i >> 3, hi = (i >> 2) & 1, nt = i & 3;
      const int d = 16 * kt + 8 * hi + 2 * c;
      out[chunk_row_offset<DIM>(8 * nt + g, d) / 2] =
          fma_pair<T>(pairs[p], scale2[d / 2], min2[d / 2]);
    }
  }
}

// Packed value tile (stage) -> transposed values [D][32]. Item (token pair tp, half hx of the
// tokens' code words): the same 16-bit half of tokens 2 tp and 2 tp + 1 joined is a run of
// 16 / VB code pairs, codes j = hx * 16 / VB + p of both tokens, channel 8 (j % (D / 8)) + j /
// (D / 8) (tile order): each pair is (V[t][d], V[t + 1][d]), one 4-byte store.
template <class T, int DIM, int VB>
__device__ __forceinline__ void dequantize_values(const unsigned char* stage, int value_codes,
                                                  int value_scale, int value_min, int group_log2,
                                                  T* value_cols) {
  constexpr int kWords = DIM * VB / 32, kHalves = 2 * kWords, kPer = 16 / VB;
  const uint32_t* codes = reinterpret_cast<const uint32_t*>(stage + value_codes);
  const T* scale = reinterpret_cast<const T*>(stage + value_scale);  // [32][v_groups]
  const T* minimum = reinterpret_cast<const T*>(stage + value_min);
  uint32_t* out = reinterpret_cast<uint32_t*>(value_cols);
  const int v_groups = DIM >> group_log2, group_shift = group_log2 - 3;  // group of n-tile nt
  // A thread's half is the same for all its items (kHalves divides the block), so are its
  // channels and groups (a run spans 16 / VB n-tiles: at most two groups of >= 32 channels).
  const int hx = threadIdx.x % kHalves, j0 = hx * kPer;
  const int g = j0 / (DIM / 8), nt0 = j0 % (DIM / 8);
  const int group0 = nt0 >> group_shift, group1 = (nt0 + kPer - 1) >> group_shift;
#pragma unroll 2
  for (int e = threadIdx.x; e < (kChunkTile / 2) * kHalves; e += kChunkThreads) {
    const int t = 2 * (e / kHalves);
    const uint32_t x =
        join_halves(codes[t * kWords + hx / 2], codes[(t + 1) * kWords + hx / 2], hx & 1);
    uint32_t pairs[kPer];
    unpack_halves<T, VB>(x, pairs);
    const uint32_t s0 =
        chunk_pair(scale + t * v_groups + group0, scale + (t + 1) * v_groups + group0);
    const uint32_t m0 =
        chunk_pair(minimum + t * v_groups + group0, minimum + (t + 1) * v_groups + group0);
    uint32_t s1 = s0, m1 = m0;
    if (group1 != group0) {
      s1 = chunk_pair(scale + t * v_groups + group1, scale + (t + 1) * v_groups + group1);
      m1 = chunk_pair(minimum + t * v_groups + group1, minimum + (t + 1) * v_groups + group1);
    }
#pragma unroll
    for (int p = 0; p < kPer; ++p) {
      const bool second = ((nt0 + p) >> group_shift) != group0;
      out[chunk_vt_offset(8 * (nt0 + p) + g, t) / 2] =
          fma_pair<T>(pairs[p], second ? s1 : s0, second ? m1 : m0);
    }
  }
}

// The packed value rows p < vq of a tile that is not packed whole on the value side (the tile
// holding value_quantized): read from global memory, one 8-channel chunk per item, into value
// rows [32][D]. Rare (one tile per row at most), so plain loads.
template <class T, int DIM, int VB>
__device__ __forceinline__ void dequantize_value_rows(const ChunkAttention& a, const ChunkRow& row,
                                                      int p0, T* value_rows) {
  constexpr int kChunks = DIM / 8, kWords = DIM * VB / 32;
  constexpr uint32_t kMask = (1u << VB) - 1u;
  const int v_groups = DIM >> row.group_log2;
  for (int e = threadIdx.x; e < kChunkTile * kChunks; e += kChunkThreads) {
    const int r = e / kChunks, x = 8 * (e % kChunks), p = p0 + r;
    if (p >= row.vq) continue;
    const PackedAt at = packed_at(a.table, row.b, p);
    const uint32_t* codes = chunk_at<uint32_t>(a.value_codes, at.page * a.value_codes_stride[0] +
                                                                  row.h * a.value_codes_stride[1] +
                                                                  int64_t{at.local} * kWords);
    const int64_t params = at.page * a.value_scale_stride[0] + row.h * a.value_scale_stride[1] +
                           int64_t{at.local} * v_groups + (x >> row.group_log2);
    const float scale = to_float(chunk_at<T>(a.value_scale, params)[0]);
    const float minimum = to_float(chunk_at<T>(a.value_min, params)[0]);
    uint32_t out[4];
#pragma unroll
    for (int i = 0; i < 8; i += 2) {
      int word0, bit0, word1, bit1;
      value_tile_slot(x + i, DIM, VB, word0, bit0);
      value_tile_slot(x + i + 1, DIM, VB, word1, bit1);
      const float x0 = fmaf(static_cast<float>((codes[word0] >> bit0) & kMask), scale, minimum);
      const float x1 = fmaf(static_cast<float>((codes[word1] >> bit1) & kMask), scale, minimum);
      out[i / 2] = pack_pair<T>(x0, x1);
    }
    *reinterpret_cast<uint4*>(value_rows + chunk_row_offset<DIM>(r, x)) =
        make_uint4(out[0], out[1], out[2], out[3]);
  }
}

// o += P V over one tile for a warp's 16 query rows: A = P from the score accumulators (rows g,
// g + 8; tokens 16 kk + 2c, +1 and + 8), B = V by ldmatrix: from transposed values [D][32]
// directly, from value rows [32][D] transposed by ldmatrix.trans.
template <class T, int DIM, bool kTransposed>
__device__ __forceinline__ void tile_output(const T* values, const float (&p)[4][4],
                                            float (&o)[DIM / 8][4]) {
  const int lane = threadIdx.x % 32, mi = lane >> 3, r8 = lane & 7;
#pragma unroll
  for (int kk = 0; kk < 2; ++kk) {
    const uint32_t a0 = pack_pair<T>(p[2 * kk][0], p[2 * kk][1]);
    const uint32_t a1 = pack_pair<T>(p[2 * kk][2], p[2 * kk][3]);
    const uint32_t a2 = pack_pair<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]);
    const uint32_t a3 = pack_pair<T>(p[2 * kk + 1][2], p[2 * kk + 1][3]);
#pragma unroll
    for (int np = 0; np < DIM / 16; ++np) {
      uint32_t v[4];                // B of n-tiles 2 np (v[0], v[1]) and 2 np + 1 (v[2], v[3])
      if constexpr (kTransposed) {  // channel 16 np + 8 (mi / 2) + r8, tokens 16 kk + 8 (mi % 2)
        const int chunk = (2 * kk + (mi & 1)) ^ ((r8 >> 1) & 3);  // the same for every np
        ldmatrix_x4(v, values + (16 * np + 8 * (mi >> 1) + r8) * 32 + (chunk << 3));
      } else {  // token 16 kk + 8 (mi % 2) + r8, channels 16 np + 8 (mi / 2)
        const int swizzle = (mi >> 1) ^ r8;  // chunk (2 np + mi / 2) ^ r8 = 2 np ^ swizzle
        ldmatrix_x4_trans(
            v, values + (16 * kk + 8 * (mi & 1) + r8) * DIM + ((swizzle ^ (2 * np)) << 3));
      }
      mma_16816<T>(o[2 * np], a0, a1, a2, a3, v[0], v[1]);
      mma_16816<T>(o[2 * np + 1], a0, a1, a2, a3, v[2], v[3]);
    }
  }
}

template <class T, int DIM, int KB, int VB>
__global__ void __launch_bounds__(kChunkThreads, KIVI_CHUNK_MIN_BLOCKS)
    chunk_attention_kernel(ChunkAttention a) {
  using Stage = ChunkStage<DIM, KB, VB>;
  using Buffer = ChunkBuffer<DIM>;
  constexpr int KT = DIM / 16;  // k-tiles of the scores over channels
  constexpr int NT = DIM / 8;   // n-tiles of the output over channels
  constexpr int kChunks = DIM / 8;
  const int q_tile = blockIdx.x, split = blockIdx.y;
  const int b = blockIdx.z / a.kv_heads, h = blockIdx.z % a.kv_heads;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int rep = a.q_heads / a.kv_heads;
  const int row0 = q_tile * kChunkQueryRows;  // query row R = token * rep + head in the group
  const int count = a.count[b], first = a.first[b];
  const int valid_rows = min(count * rep - row0, kChunkQueryRows);  // <= 0: none
  const int padded_rows = min(a.tokens * rep - row0, kChunkQueryRows);

  extern __shared__ __align__(16) unsigned char chunk_smem[];
  T* buffers = reinterpret_cast<T*>(chunk_smem);  // [2][Buffer::kElements]
  unsigned char* stages = chunk_smem + 2 * Buffer::kElements * sizeof(T);
  T* const out = static_cast<T*>(a.out);
  // out[b, h * rep + R % rep, R / rep, :]
  auto out_row = [&](int r) {
    const int R = row0 + r;
    return out + ((int64_t{b} * a.q_heads + h * rep + R % rep) * a.tokens + R / rep) * DIM;
  };

  if (valid_rows <= 0) {  // no query of this tile is in the chunk: zeros (padding), no reads
    if (a.splits == 1)
      for (int e = tid; e < max(padded_rows, 0) * kChunks; e += kChunkThreads)
        *reinterpret_cast<uint4*>(out_row(e / kChunks) + 8 * (e % kChunks)) =
            make_uint4(0u, 0u, 0u, 0u);
    return;
  }
  const int last_token = (row0 + valid_rows - 1) / rep;
  const int tiles = (first + last_token + kChunkTile) / kChunkTile;  // positions [0, first+last]
  const int tile_begin = split * a.tiles_per_split;
  const int tile_end = min(tiles, tile_begin + a.tiles_per_split);

  ChunkRow row;
  row.b = b;
  row.h = h;
  row.first = first;
  row.count = count;
  row.kq = a.key_quantized[b];
  row.vq = a.value_quantized[b];
  row.group_log2 = __ffs(a.group_size) - 1;

  auto buffer = [&](int k) { return buffers + (k & 1) * Buffer::kElements; };
  auto stage = [&](int k) { return stages + (k % kChunkStages) * Stage::kBytes; };
  auto packed_both = [&](int tile) {
    const int p1 = (tile + 1) * kChunkTile;
    return p1 <= row.kq && p1 <= row.vq;
  };
  // Tile k of the split (k = tile - tile_begin): its stage is copied kChunkStages tiles ahead,
  // its rows one tile ahead into buffer(k); each copy is one commit group, empty past the range.
  // The page of the packed tiles being copied, and the next one's, loaded a page ahead: the
  // block table is read once per page (once per row for the identity table), off the path.
  const int packed_end = max(row.kq, row.vq);  // the table covers the packed positions
  int page_block = -2;                         // (no page yet, nor a next one)
  int64_t page = 0, next_page = 0;
  auto issue_stage_of = [&](int k) {
    const int p0 = (tile_begin + k) * kChunkTile;
    if (tile_begin + k < tile_end && p0 + kChunkTile <= packed_end) {
      const int block = p0 / a.table.page_tokens;
      if (block != page_block) {
        page = block == page_block + 1 ? next_page : page_of(a.table, b, block);
        page_block = block;
        if (int64_t{block + 1} * a.table.page_tokens < packed_end)
          next_page = page_of(a.table, b, block + 1);
      }
      issue_stage<T, DIM, KB, VB>(a, row, p0, PackedAt{page, p0 - block * a.table.page_tokens},
                                  stage(k));
    }
    copy_async_commit();
  };
  auto issue_rows_of = [&](int k) {
    if (tile_begin + k < tile_end)
      issue_rows<T, DIM>(a, row, (tile_begin + k) * kChunkTile, buffer(k));
    copy_async_commit();
  };
  auto dequantize = [&](int k) {
    const int p0 = (tile_begin + k) * kChunkTile;
    T* dst = buffer(k);
    if (p0 + kChunkTile <= row.kq)
      dequantize_keys<T, DIM, KB>(stage(k), Stage::kKeyScale, dst + Buffer::kKeys);
    if (p0 + kChunkTile <= row.vq)
      dequantize_values<T, DIM, VB>(stage(k), Stage::kValueCodes, Stage::kValueScale,
                                    Stage::kValueMin, row.group_log2, dst + Buffer::kValues);
    else if (p0 < row.vq)
      dequantize_value_rows<T, DIM, VB>(a, row, p0, dst + Buffer::kValues);
  };

  // ---- prologue: the queries into buffer 1, stages 0.., rows of tile 0 into buffer 0. The
  // groups follow the loop's pattern (rows of k + 1, then stage k + kChunkStages), so that one
  // wait count serves every iteration.
  {
    T* q_rows = buffer(1);
    const T* q = static_cast<const T*>(a.q) + b * a.q_stride[0];
    for (int e = tid; e < kChunkQueryRows * kChunks; e += kChunkThreads) {
      const int r = e / kChunks, x = 8 * (e % kChunks), R = row0 + r;
      T* dst = q_rows + chunk_row_offset<DIM>(r, x);
      if (r < valid_rows)
        copy_async16(dst, q + (h * rep + R % rep) * a.q_stride[1] + (R / rep) * a.q_stride[2] + x);
      else
        *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
    }
    copy_async_commit();
  }
  for (int k = 0; k < kChunkStages; ++k) {
    if (k + 1 == kChunkStages)
      issue_rows_of(0);
    else
      copy_async_commit();
    issue_stage_of(k);
  }
  copy_async_wait<1>();  // all but the last stage
  __syncthreads();
  // The warp's query rows as A fragments, kept for the whole loop: rows warp * 16 + g (+ 8),
  // channels 16 kt + 2c (+ 8).
  uint32_t q_frag[KT][4];
  {
    const int mi = lane >> 3, r = warp * 16 + 8 * (mi & 1) + (lane & 7);
#pragma unroll
    for (int kt = 0; kt < KT; ++kt)
      ldmatrix_x4(q_frag[kt], buffer(1) + chunk_row_offset<DIM>(r, 16 * kt + 8 * (mi >> 1)));
  }
  if (tile_begin < tile_end) dequantize(0);

  // Softmax state of rows g and g + 8 (base 2; this lane's share of the sums).
  const float score_scale = a.scale * 1.4426950408889634f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  float o[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
  // The chunk tokens of rows g and g + 8 (their causal limit among the chunk's own positions).
  const int token0 = (row0 + warp * 16 + g) / rep, token1 = (row0 + warp * 16 + g + 8) / rep;

  for (int k = 0; tile_begin + k < tile_end; ++k) {
    const int tile = tile_begin + k, p0 = tile * kChunkTile;
    // Buffer k complete (its rows copied, its dequantization by every thread stored) and the
    // stage of k + 1 in: rows are waited for at once, stages leave the later ones in flight.
    if (packed_both(tile))
      copy_async_wait<2 * (kChunkStages - 2)>();
    else
      copy_async_wait<1>();
    __syncthreads();  // also: every warp is done with buffer k - 1 and stage k
    issue_rows_of(k + 1);
    issue_stage_of(k + kChunkStages);
    if (tile + 1 < tile_end) dequantize(k + 1);

    // ---- scores S = Q K^T of the warp's 16 rows x 32 positions: s[nt] = n-tile nt (positions
    // 8 nt + 2c, +1; rows g, g + 8)
    const T* keys = buffer(k) + Buffer::kKeys;
    float s[4][4];
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
    {
      // This lane's ldmatrix row: position 16 np + 8 (mi / 2) + lane % 8, channels 16 kt + 8 (mi
      // % 2): its swizzled chunk (2 kt + mi % 2) ^ (lane % 8) = 2 kt ^ swizzle, one XOR per kt.
      const int mi = lane >> 3, swizzle = (mi & 1) ^ (lane & 7);
      const T* lane_keys = keys + (8 * (mi >> 1) + (lane & 7)) * DIM;
#pragma unroll
      for (int kt = 0; kt < KT; ++kt)
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          uint32_t kf[4];  // B of n-tiles 2 np (kf[0], kf[1]) and 2 np + 1
          ldmatrix_x4(kf, lane_keys + 16 * np * DIM + ((swizzle ^ (2 * kt)) << 3));
          mma_16816<T>(s[2 * np], q_frag[kt][0], q_frag[kt][1], q_frag[kt][2], q_frag[kt][3], kf[0],
                       kf[1]);
          mma_16816<T>(s[2 * np + 1], q_frag[kt][0], q_frag[kt][1], q_frag[kt][2], q_frag[kt][3],
                       kf[2], kf[3]);
        }
    }
    const bool causal = p0 + kChunkTile > first;  // the tile reaches the chunk's own positions
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        s[nt][i] *= score_scale;
        if (causal) {
          const int own = p0 + 8 * nt + 2 * c + (i & 1) - first;
          if (own > (i < 2 ? token0 : token1)) s[nt][i] = -INFINITY;
        }
      }
    // ---- online softmax per row (its 32 positions over the 4 lanes c of the quad)
    float correction[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      float tile_max = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
        tile_max = fmaxf(tile_max, fmaxf(s[nt][2 * j], s[nt][2 * j + 1]));
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
      const float m_new = fmaxf(m[j], tile_max);
      // A row with no visible position yet (a split of masked tiles) shifts by 0, not -inf.
      const float shift = m_new == -INFINITY ? 0.0f : m_new;
      correction[j] = exp2f(m[j] - shift);
      m[j] = m_new;
      l[j] *= correction[j];
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          s[nt][2 * j + e] = exp2f(s[nt][2 * j + e] - shift);
          l[j] += s[nt][2 * j + e];
        }
    }
    if (__any_sync(0xffffffffu, correction[0] != 1.0f || correction[1] != 1.0f)) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        o[nt][0] *= correction[0];
        o[nt][1] *= correction[0];
        o[nt][2] *= correction[1];
        o[nt][3] *= correction[1];
      }
    }
    // ---- o += P V
    const T* values = buffer(k) + Buffer::kValues;
    if (p0 + kChunkTile <= row.vq)
      tile_output<T, DIM, true>(values, s, o);
    else
      tile_output<T, DIM, false>(values, s, o);
  }
  copy_async_wait<0>();
  __syncthreads();  // the buffers are free

  // ---- epilogue: the sums over the quad; one split writes the output, several their partials.
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    l[j] += __shfl_xor_sync(0xffffffffu, l[j], 1);
    l[j] += __shfl_xor_sync(0xffffffffu, l[j], 2);
  }
  const int r0 = warp * 16 + g, r1 = r0 + 8;  // the lane's rows in the tile
  if (a.splits == 1) {
    T* staged = buffers;  // [64][D], rows as the queries were
    const float inv0 = l[0] > 0.0f ? 1.0f / l[0] : 0.0f, inv1 = l[1] > 0.0f ? 1.0f / l[1] : 0.0f;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int d = 8 * nt + 2 * c;
      *reinterpret_cast<uint32_t*>(staged + chunk_row_offset<DIM>(r0, d)) =
          pack_pair<T>(o[nt][0] * inv0, o[nt][1] * inv0);
      *reinterpret_cast<uint32_t*>(staged + chunk_row_offset<DIM>(r1, d)) =
          pack_pair<T>(o[nt][2] * inv1, o[nt][3] * inv1);
    }
    __syncthreads();
    for (int e = tid; e < padded_rows * kChunks; e += kChunkThreads) {
      const int r = e / kChunks, x = 8 * (e % kChunks);
      const uint4 v = r < valid_rows
                          ? *reinterpret_cast<const uint4*>(staged + chunk_row_offset<DIM>(r, x))
                          : make_uint4(0u, 0u, 0u, 0u);
      *reinterpret_cast<uint4*>(out_row(r) + x) = v;
    }
    return;
  }
  // Partials of split `split`: [splits][partial rows][D] sums, then max and sum per row (base 2).
  const ChunkWorkspace ws(a.workspace, int64_t{gridDim.z} * gridDim.x * kChunkQueryRows, DIM,
                          a.splits);
  const int64_t base = (int64_t{blockIdx.z} * gridDim.x + q_tile) * kChunkQueryRows;
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int r = j == 0 ? r0 : r1;
    if (r >= valid_rows) continue;
    const int64_t at = int64_t{split} * ws.rows + base + r;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
      *reinterpret_cast<float2*>(ws.acc + at * DIM + 8 * nt + 2 * c) =
          make_float2(o[nt][2 * j], o[nt][2 * j + 1]);
    if (c == 0) {
      ws.max[at] = m[j];
      ws.sum[at] = l[j];
    }
  }
}

// Resident blocks per multiprocessor of this instantiation (for choosing the splits); the first
// call also sets the kernel's shared-memory attributes.
template <class T, int DIM, int KB, int VB>
int chunk_occupancy() {
  constexpr int kBytes = kChunkSmemBytes<DIM, KB, VB>;
  static const int blocks = [] {
    cudaFuncSetAttribute(chunk_attention_kernel<T, DIM, KB, VB>,
                         cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes);
    cudaFuncSetAttribute(chunk_attention_kernel<T, DIM, KB, VB>,
                         cudaFuncAttributePreferredSharedMemoryCarveout,
                         cudaSharedmemCarveoutMaxShared);
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, chunk_attention_kernel<T, DIM, KB, VB>,
                                                      kChunkThreads, kBytes) != cudaSuccess)
      n = 1;
    return n > 0 ? n : 1;
  }();
  return blocks;
}

template <class T, int DIM, int KB, int VB>
void launch_chunk(const ChunkAttention& a, cudaStream_t stream) {
  (void)chunk_occupancy<T, DIM, KB, VB>();  // sets the shared-memory attributes once
  const dim3 grid(unsigned(chunk_query_tiles(a)), unsigned(a.splits),
                  unsigned(a.rows) * unsigned(a.kv_heads));
  chunk_attention_kernel<T, DIM, KB, VB>
      <<<grid, kChunkThreads, kChunkSmemBytes<DIM, KB, VB>, stream>>>(a);
}

#define KIVI_DECLARE_CHUNK_BITS(T, DIM, KB)                                              \
  extern template void launch_chunk<T, DIM, KB, 2>(const ChunkAttention&, cudaStream_t); \
  extern template void launch_chunk<T, DIM, KB, 4>(const ChunkAttention&, cudaStream_t); \
  extern template void launch_chunk<T, DIM, KB, 8>(const ChunkAttention&, cudaStream_t); \
  extern template int chunk_occupancy<T, DIM, KB, 2>();                                  \
  extern template int chunk_occupancy<T, DIM, KB, 4>();                                  \
  extern template int chunk_occupancy<T, DIM, KB, 8>();
#define KIVI_DECLARE_CHUNK(T, DIM)   \
  KIVI_DECLARE_CHUNK_BITS(T, DIM, 2) \
  KIVI_DECLARE_CHUNK_BITS(T, DIM, 4) KIVI_DECLARE_CHUNK_BITS(T, DIM, 8)
KIVI_DECLARE_CHUNK(__half, 64)
KIVI_DECLARE_CHUNK(__half, 128)
KIVI_DECLARE_CHUNK(__nv_bfloat16, 64)
KIVI_DECLARE_CHUNK(__nv_bfloat16, 128)

}  // namespace kivi::kivi_cache::cuda
