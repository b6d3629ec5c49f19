// The tail of a row for the tensor-core decode kernel: positions after its last tile packed on
// both sides (the residual windows and the tiles they straddle), in tiles of 32 that the main
// warps take after their packed tiles. Everything a tail tile needs is in flight in one round
// trip (issue_tail_copies):
//   keys    a tile is all packed (kq is a multiple of 32) or all residual: a packed tile is
//           staged as the main loop stages it and scored by the same code (packed_tile_scores);
//           a residual tile is copied as T rows;
//   values  residual rows are copied from the ring; the rows still packed (the first tail tile
//           may hold up to 31 of them) have their codes copied into their own row's bytes and
//           their scales and minima loaded into registers, and each lane then dequantizes its
//           row in place.
// Rows are [32][DIM] T with 16-byte chunks XOR-swizzled by row (tail_row_offset), so that the
// fragment loads of both MMAs hit distinct banks without padding.
#pragma once

#include <cstdint>
#include <type_traits>

#include "block_table.cuh"
#include "decode_attention.cuh"
#include "mma_fragments.cuh"
#include "tile_slots.cuh"

namespace kivi::kivi_cache::cuda {

// Where the data of one (row, kv head) lives: its packed parts through the row's block table
// (kivi_kernels.h), its residual windows directly.
template <class T>
struct RowView {
  // Packed parts at the head's offset in page 0; page k's are `page stride` * k further on.
  const uint32_t* key_codes;
  const T *key_scale, *key_min;
  const uint32_t* value_codes;
  const T *value_scale, *value_min;
  int64_t key_codes_page, key_scale_page, value_codes_page, value_scale_page;
  BlockTable table;
  int b;  // the row, in the table
  const T *key_res, *value_res;
  int kq, vq, group, group_log2, value_slots;

  // The row's packed key codes, scales and minima of the key group at `at` (packed_at of a
  // multiple of 32), and the first word of its 32-token tile within the group's codes.
  struct KeyTile {
    const uint32_t* codes;
    const T *scale, *min;
  };
  template <int DIM, int KB>
  __device__ __forceinline__ KeyTile packed_keys(PackedAt at) const {
    const int gi = at.local >> group_log2, tile_in_group = (at.local & (group - 1)) / kTile;
    const int64_t scale_at = at.page * key_scale_page + int64_t{gi} * DIM;
    return {key_codes + at.page * key_codes_page + (int64_t{gi} << group_log2) * (DIM * KB / 32) +
                tile_in_group * DIM * KB,
            key_scale + scale_at, key_min + scale_at};
  }
  // The row's packed value codes, scales and minima from `at` on (within its page, which holds
  // its whole 32-token tile).
  struct ValueRows {
    const uint32_t* codes;  // [tokens, Wv] from p
    const T *scale, *min;   // [tokens, D / G] from p
  };
  template <int DIM, int VB>
  __device__ __forceinline__ ValueRows packed_values(PackedAt at) const {
    const int64_t scale_at = at.page * value_scale_page + int64_t{at.local} * (DIM >> group_log2);
    return {value_codes + at.page * value_codes_page + int64_t{at.local} * (DIM * VB / 32),
            value_scale + scale_at, value_min + scale_at};
  }
};

// Row b's view of kv head h.
template <class T>
__device__ __forceinline__ RowView<T> row_view(const DecodeAttention& a, int b, int h,
                                               int group_log2) {
  RowView<T> row;
  row.key_codes = reinterpret_cast<const uint32_t*>(a.key_codes) + h * a.key_codes_stride[1];
  row.key_scale = static_cast<const T*>(a.key_scale) + h * a.key_scale_stride[1];
  row.key_min = static_cast<const T*>(a.key_min) + h * a.key_scale_stride[1];
  row.value_codes = reinterpret_cast<const uint32_t*>(a.value_codes) + h * a.value_codes_stride[1];
  row.value_scale = static_cast<const T*>(a.value_scale) + h * a.value_scale_stride[1];
  row.value_min = static_cast<const T*>(a.value_min) + h * a.value_scale_stride[1];
  row.key_codes_page = a.key_codes_stride[0];
  row.key_scale_page = a.key_scale_stride[0];
  row.value_codes_page = a.value_codes_stride[0];
  row.value_scale_page = a.value_scale_stride[0];
  row.table = a.table;
  row.b = b;
  row.key_res = static_cast<const T*>(a.key_residual) + b * a.key_residual_stride[0] +
                h * a.key_residual_stride[1];
  row.value_res = static_cast<const T*>(a.value_residual) + b * a.value_residual_stride[0] +
                  h * a.value_residual_stride[1];
  row.kq = a.key_quantized[b];
  row.vq = a.value_quantized[b];
  row.group = a.group_size;
  row.group_log2 = group_log2;
  row.value_slots = a.value_slots;
  return row;
}

// The transposed layout of the kernel's per-tile state (mma_fragments.cuh), per lane (g, c):
//   scores  s[mt][i]: token 16 mt + g + 8 (i / 2) of the tile, query head 2c + i % 2;
//   output  o[mt][i]: channel 16 mt + g + 8 (i / 2), query head 2c + i % 2;
//   m[j], l[j]: the running max (base 2) of head 2c + j, and this lane's share of its sum.
// Online softmax over one tile's scores (-inf for absent tokens): updates m and l, rescales the
// output accumulators (o_min: the min term, columns are heads too) and leaves the
// probabilities in p.
template <int MT>
__device__ __forceinline__ void softmax_tile(const float (&s)[2][4], float (&m)[2], float (&l)[2],
                                             float (&o)[MT][4], float (&o_min)[4],
                                             float (&p)[2][4]) {
  float correction[2];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    float tile_max = fmaxf(fmaxf(s[0][j], s[0][j + 2]), fmaxf(s[1][j], s[1][j + 2]));
#pragma unroll
    for (int offset = 4; offset < 32; offset *= 2)  // over g: the tile's 32 tokens
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
    const float m_new = fmaxf(m[j], tile_max);
    correction[j] = exp2f(m[j] - m_new);
    m[j] = m_new;
    l[j] *= correction[j];
  }
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      p[mt][i] = exp2f(s[mt][i] - m[i % 2]);
      l[i % 2] += p[mt][i];
    }
  // Rescale only when some head's maximum moved (after the first tiles, it rarely does).
  if (__any_sync(0xffffffffu, correction[0] != 1.0f || correction[1] != 1.0f)) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 4; ++i) o[mt][i] *= correction[i % 2];
#pragma unroll
    for (int i = 0; i < 4; ++i) o_min[i] *= correction[i % 2];
  }
}

// The B fragments of P^T for k-tile kt (tokens 16 kt + [0, 16)) of the output MMAs: b0 = P[head
// g][tokens 16 kt + 2c, +1], b1 the same at + 8, from the lane's probabilities in the score
// layout (tokens 16 kt + g, + 8; heads 2c, 2c + 1) by two 8 x 8 transposes; `scale0`/`scale1`
// multiply the lane's two tokens first (in float: one rounding to T).
template <class T>
__device__ __forceinline__ void transposed_probs(const float (&p)[4], float scale0, float scale1,
                                                 uint32_t& b0, uint32_t& b1) {
  b0 = transpose_pair(pack_pair<T>(p[0] * scale0, p[1] * scale0));
  b1 = transpose_pair(pack_pair<T>(p[2] * scale1, p[3] * scale1));
}

// Element offset of (row r, channel d) in a warp's staged rows [32][DIM]: 16-byte chunk d / 8
// XOR r % 8.
template <int DIM>
__device__ __forceinline__ int tail_row_offset(int r, int d) {
  return r * DIM + (((d >> 3) ^ (r & 7)) << 3) + (d & 7);
}
// One warp's staged rows of one side, in bytes.
template <int DIM>
inline constexpr int kTailRowsBytes = kTile* DIM * 2;

// Copies (cp.async) rows r of [t0, t1) that `wanted(p)` selects from `source(p)` into rows_s, and
// zeros the rows past t1. Lane l copies the chunk l % (DIM / 8) of every (32 / (DIM / 8))-th row.
template <int DIM, class T, class Wanted, class Source>
__device__ __forceinline__ void copy_tail_rows(T* rows_s, int t0, int t1, Wanted wanted,
                                               Source source) {
  constexpr int kChunks = DIM / 8, kRowStep = 32 / kChunks;
  const int lane = threadIdx.x % 32, chunk = lane % kChunks;
#pragma unroll 4
  for (int r = lane / kChunks; r < kTile; r += kRowStep) {
    const int p = t0 + r;
    T* dst = rows_s + tail_row_offset<DIM>(r, 8 * chunk);
    if (p >= t1)
      *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
    else if (wanted(p))
      copy_async16(dst, source(p) + 8 * chunk);
  }
}

// The common case of copy_tail_rows, a whole tile of rows all wanted, without its per-row tests
// and divisions (the generic loop cost ~50 instructions per value row, a ring slot being a
// division, so issuing one tile's copies cost more than attending a packed tile): the rows of a
// lane are every kRowStep-th from its first, so their sources advance by a constant, and a
// ring's slot by kRowStep with one wrap test.
//   contiguous: row r from src + r * DIM (the key residual, slot = position - kq);
//   ring:       position t0 + r from ring slot (t0 + r) % slots (the value residual), slots >= 32.
template <int DIM, class T>
__device__ __forceinline__ void copy_whole_tail_rows(T* rows_s, const T* src) {
  constexpr int kChunks = DIM / 8, kRowStep = 32 / kChunks;
  const int lane = threadIdx.x % 32, chunk = lane % kChunks, r0 = lane / kChunks;
  const T* from = src + r0 * DIM + 8 * chunk;
#pragma unroll
  for (int i = 0; i < kTile / kRowStep; ++i) {
    const int r = r0 + i * kRowStep;
    copy_async16(rows_s + tail_row_offset<DIM>(r, 8 * chunk), from + i * kRowStep * DIM);
  }
}
template <int DIM, class T>
__device__ __forceinline__ void copy_whole_ring_rows(T* rows_s, const T* ring, int t0, int slots) {
  constexpr int kChunks = DIM / 8, kRowStep = 32 / kChunks;
  const int lane = threadIdx.x % 32, chunk = lane % kChunks, r0 = lane / kChunks;
  int slot = (t0 + r0) % slots;
#pragma unroll
  for (int i = 0; i < kTile / kRowStep; ++i) {
    const int r = r0 + i * kRowStep;
    copy_async16(rows_s + tail_row_offset<DIM>(r, 8 * chunk), ring + slot * DIM + 8 * chunk);
    slot += kRowStep;
    if (slot >= slots) slot -= slots;
  }
}

// What a tail warp's lane holds between issuing its copies and attending its tile: the scale and
// minimum of each value group of its own packed row (lane r: position t0 + r < vq), as bits.
template <int DIM>
struct TailValueParams {
  static constexpr int kGroups = DIM / 32;  // at most (group_size >= 32)
  uint16_t scale[kGroups], min[kGroups];
};

// The packed key tile of a tail warp goes where a main warp's stage would (its key part).
template <int DIM, int KB>
struct TailKeyStage {
  static constexpr int kCodes = 0, kScale = 4 * DIM * KB, kMin = kScale + 2 * DIM;
};

// Copies (cp.async) the packed key tile at position p0 (a multiple of 32) into a stage's key
// part: its codes in tile order, then its group's scale and min. Main and tail warps alike.
template <int DIM, int KB, class T>
__device__ __forceinline__ void copy_key_tile(unsigned char* stage, const RowView<T>& row,
                                              PackedAt at) {
  using KeyStage = TailKeyStage<DIM, KB>;
  const int lane = threadIdx.x % 32;
  const auto tile = row.template packed_keys<DIM, KB>(at);
#pragma unroll
  for (int i = lane; i < DIM * KB / 4; i += 32)
    copy_async16(stage + KeyStage::kCodes + 16 * i, tile.codes + 4 * i);
  if (lane < DIM / 8) {
    copy_async16(stage + KeyStage::kScale + 16 * lane, tile.scale + 8 * lane);
    copy_async16(stage + KeyStage::kMin + 16 * lane, tile.min + 8 * lane);
  }
}

// Issues every copy of the tail tile [t0, t1) of this warp into smem (kTailRowsBytes for the
// keys, then as much for the values) and loads its packed rows' value parameters; one commit.
template <class T, int DIM, int KB, int VB>
__device__ __forceinline__ void issue_tail_copies(const RowView<T>& row, int t0, int t1,
                                                  unsigned char* smem,
                                                  TailValueParams<DIM>& params) {
  const int lane = threadIdx.x % 32;
  T* key_rows = reinterpret_cast<T*>(smem);
  T* value_rows = reinterpret_cast<T*>(smem + kTailRowsBytes<DIM>);
  const bool whole = t1 - t0 == kTile;
  if (t0 < row.kq) {  // a whole packed key tile
    copy_key_tile<DIM, KB>(smem, row, packed_at(row.table, row.b, t0));
  } else if (whole) {
    copy_whole_tail_rows<DIM>(key_rows, row.key_res + int64_t{t0 - row.kq} * DIM);
  } else {
    copy_tail_rows<DIM>(
        key_rows, t0, t1, [](int) { return true; },
        [&](int p) { return row.key_res + int64_t{p - row.kq} * DIM; });
  }
  if (whole && t0 >= row.vq && row.value_slots >= kTile) {
    copy_whole_ring_rows<DIM>(value_rows, row.value_res, t0, row.value_slots);
  } else {
    copy_tail_rows<DIM>(
        value_rows, t0, t1, [&](int p) { return p >= row.vq; },
        [&](int p) { return row.value_res + int64_t{p % row.value_slots} * DIM; });
  }
  // Packed value rows: lane r copies its row's codes into the row's first bytes (its own
  // dequantization overwrites them later) and loads its scales and minima.
  const int p = t0 + lane;
  if (p < t1 && p < row.vq) {
    constexpr int kCodeChunks = DIM * VB / 128;  // 16-byte chunks of one row's codes
    const auto packed = row.template packed_values<DIM, VB>(packed_at(row.table, row.b, p));
    unsigned char* dst = reinterpret_cast<unsigned char*>(value_rows + lane * DIM);
#pragma unroll
    for (int i = 0; i < kCodeChunks; ++i) copy_async16(dst + 16 * i, packed.codes + 4 * i);
    const int v_groups = DIM >> row.group_log2;
    const uint16_t* scale = reinterpret_cast<const uint16_t*>(packed.scale);
    const uint16_t* minimum = reinterpret_cast<const uint16_t*>(packed.min);
#pragma unroll
    for (int j = 0; j < TailValueParams<DIM>::kGroups; ++j)
      if (j < v_groups) {
        params.scale[j] = scale[j];
        params.min[j] = minimum[j];
      }
  }
}

// Lane r's packed value row (t0 + r < vq), in place: its codes (copied into the row's first
// bytes) become code * scale + min rounded to T, one 16-byte chunk of 8 channels at a time.
template <class T, int DIM, int VB>
__device__ __noinline__ void dequantize_tail_row(T* value_rows, int group_log2,
                                                 const TailValueParams<DIM>& params) {
  const int lane = threadIdx.x % 32;
  constexpr int kWords = DIM * VB / 32;
  uint32_t words[kWords];
  const uint4* src = reinterpret_cast<const uint4*>(value_rows + lane * DIM);
#pragma unroll
  for (int i = 0; i < kWords / 4; ++i) {
    const uint4 v = src[i];
    words[4 * i] = v.x;
    words[4 * i + 1] = v.y;
    words[4 * i + 2] = v.z;
    words[4 * i + 3] = v.w;
  }
  constexpr uint32_t kMask = (1u << VB) - 1u;
#pragma unroll
  for (int chunk = 0; chunk < DIM / 8; ++chunk) {
    const int group = (8 * chunk) >> group_log2;
    uint16_t s_bits = params.scale[0], m_bits = params.min[0];
#pragma unroll
    for (int j = 1; j < TailValueParams<DIM>::kGroups; ++j)
      if (group == j) {
        s_bits = params.scale[j];
        m_bits = params.min[j];
      }
    const float scale = to_float(*reinterpret_cast<const T*>(&s_bits));
    const float minimum = to_float(*reinterpret_cast<const T*>(&m_bits));
    uint32_t out[4];
#pragma unroll
    for (int e = 0; e < 8; e += 2) {
      int word0, bit0, word1, bit1;
      value_tile_slot(8 * chunk + e, DIM, VB, word0, bit0);
      value_tile_slot(8 * chunk + e + 1, DIM, VB, word1, bit1);
      const float x0 = fmaf(static_cast<float>((words[word0] >> bit0) & kMask), scale, minimum);
      const float x1 = fmaf(static_cast<float>((words[word1] >> bit1) & kMask), scale, minimum);
      out[e / 2] = pack_pair<T>(x0, x1);
    }
    *reinterpret_cast<uint4*>(value_rows + tail_row_offset<DIM>(lane, 8 * chunk)) =
        make_uint4(out[0], out[1], out[2], out[3]);
  }
}

// Scores over residual key rows staged by issue_tail_copies, transposed: A = K (tokens 16 mt +
// g, + 8; channels 16 kt + 2c, +1 and + 8), B = the queries (q_frag: head g, same channels).
// Lane 8j + i addresses row i of A's matrix j: token 16 mt + 8 (j % 2) + i, channels from
// 16 kt + 8 (j / 2).
template <class T, int DIM>
__device__ __forceinline__ void row_tile_scores(const T* key_rows, const uint32_t (*q_frag)[2],
                                                float (&acc)[2][4]) {
  constexpr int KT = DIM / 16;
  const int lane = threadIdx.x % 32, i = lane % 8, j = lane / 8;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[mt][e] = 0.0f;
#pragma unroll
  for (int kt = 0; kt < KT; ++kt)
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      uint32_t a[4];
      ldmatrix_x4(
          a, key_rows + tail_row_offset<DIM>(16 * mt + 8 * (j % 2) + i, 16 * kt + 8 * (j / 2)));
      mma_16816<T>(acc[mt], a[0], a[1], a[2], a[3], q_frag[kt][0], q_frag[kt][1]);
    }
}

// o += P V over the value rows staged (and dequantized) for the tail tile, transposed: A = V^T
// (channels 16 mt + g, + 8; tokens 16 kt + 2c, +1 and + 8), B = P^T (transposed_probs). A's
// matrices are V's 8 x 8 blocks loaded transposed: lane 8j + i addresses token 16 kt +
// 8 (j / 2) + i, channels from 16 mt + 8 (j % 2). bf16: P is its rounding plus the remainder,
// two MMAs (P's 8-bit mantissa alone costs too much).
template <class T, int DIM>
__device__ __forceinline__ void row_tile_output(const T* value_rows, const float (&p)[2][4],
                                                float (&o)[DIM / 16][4]) {
  constexpr int MT = DIM / 16;
  constexpr bool kSplitP = !std::is_same_v<T, __half>;
  const int lane = threadIdx.x % 32, i = lane % 8, j = lane / 8;
#pragma unroll
  for (int kt = 0; kt < 2; ++kt) {
    uint32_t b0, b1, lo0 = 0u, lo1 = 0u;
    transposed_probs<T>(p[kt], 1.0f, 1.0f, b0, b1);
    if constexpr (kSplitP) {
      float rest[4];
      const float2 h01 = pair_to_float2(pack_pair<T>(p[kt][0], p[kt][1]), T{});
      const float2 h23 = pair_to_float2(pack_pair<T>(p[kt][2], p[kt][3]), T{});
      rest[0] = p[kt][0] - h01.x;
      rest[1] = p[kt][1] - h01.y;
      rest[2] = p[kt][2] - h23.x;
      rest[3] = p[kt][3] - h23.y;
      transposed_probs<T>(rest, 1.0f, 1.0f, lo0, lo1);
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      uint32_t a[4];
      ldmatrix_x4_trans(
          a, value_rows + tail_row_offset<DIM>(16 * kt + 8 * (j / 2) + i, 16 * mt + 8 * (j % 2)));
      mma_16816<T>(o[mt], a[0], a[1], a[2], a[3], b0, b1);
      if constexpr (kSplitP) mma_16816<T>(o[mt], a[0], a[1], a[2], a[3], lo0, lo1);
    }
  }
}

}  // namespace kivi::kivi_cache::cuda
