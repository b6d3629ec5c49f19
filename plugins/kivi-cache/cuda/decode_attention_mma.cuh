// The fused KIVI decode kernel on tensor cores (fp16 and bf16 storage), reading the cache's
// tile order (tile_order.h) so that its inner loop costs about one instruction per code pair.
//
// Grid: the splits of every (row, kv head), each a range of the row's 32-token tiles. 4 warps
// per block; each takes every fourth tile of the block's range with an online softmax of its
// own; warps merge in shared memory, and the last block of each (row, kv head) to finish
// combines the splits (decode_merge.cuh). Packed data is addressed through the row's block
// table (kivi_kernels.h), so a paged cache runs the same kernel. Every m16n8k16 MMA is transposed:
// tokens or channels are its 16 rows, the GQA group's query heads its 8 columns
// (mma_fragments.cuh), so no row is spent on absent heads:
//   scores  S^T[t][r] = sum_d code[t][d] * (q[r][d] * scale[d]) + sum_d min[d] * q[r][d]:
//           A = the codes (exact small integers), B = q * scale (one HMUL2 per pair, per tile);
//           the bias is one more MMA whose A holds min in every row;
//   output  O^T[d][r] = sum_t code[t][d] * (P[r][t] * scale[t][c]) + sum_t min[t][c] * P[r][t]
//           for channel group c of d: A = the codes, B = (P * scale)^T, P^T made from the score
//           fragments by movmatrix; the min term is one more MMA whose A holds min^T.
// A lane's key codes of a tile are 16-byte words in shared memory that give its A fragments
// directly; a lane's value codes of two tokens become A fragments with one byte permute. Codes
// become fp16/bf16 with one LOP3 and one HFMA2 per pair (code_convert.cuh).
//
// Memory: each warp keeps kStages tiles in flight, copied with cp.async into its own stages
// (the packed codes, scales and minima of keys and values), so the loads of several tiles
// overlap the arithmetic. The tiles packed on both sides go through that pipeline; the rest of
// a row (the residual windows and the tiles they straddle, ~R + 32 tokens: its last tiles, so
// the last split's) is attended tile by tile after it, each in one round trip, with the same
// MMAs (decode_tail.cuh). (Tail blocks of their own, queued after the main blocks, started only
// when main blocks left: a second wave of ~10 us at batch 16 x 4K.)
#pragma once

#include "code_convert.cuh"
#include "decode_attention.cuh"
#include "decode_merge.cuh"
#include "decode_tail.cuh"
#include "mma_fragments.cuh"
#include "tile_slots.cuh"

namespace kivi::kivi_cache::cuda {

// Blocks per multiprocessor the register allocation must allow (more blocks, fewer registers).
#ifndef KIVI_DECODE_MIN_BLOCKS
#define KIVI_DECODE_MIN_BLOCKS 1
#endif

// Packed tiles a warp attends before it issues its early tail tile's copies (see the kernel).
inline constexpr int kTailIssueDelay = 2;

// One tile's packed data in shared memory (byte offsets): the 32 tokens' key codes in tile order
// [32 lanes][DIM * KB / 32 words], the key group's scale and min [DIM], the value codes
// [32 tokens][DIM * VB / 32 words], the tokens' value scales and mins [32][DIM / group].
template <int DIM, int KB, int VB>
struct MmaStage {
  static constexpr int kMostGroups = DIM / 32;  // value channel groups (group_size >= 32)
  static constexpr int kKeyCodes = 0;
  static constexpr int kKeyScale = kKeyCodes + 4 * DIM * KB;
  static constexpr int kKeyMin = kKeyScale + 2 * DIM;
  static constexpr int kValueCodes = kKeyMin + 2 * DIM;
  static constexpr int kValueScale = kValueCodes + 4 * DIM * VB;
  static constexpr int kValueMin = kValueScale + 2 * kTile * kMostGroups;
  static constexpr int kBytes = kValueMin + 2 * kTile * kMostGroups;
  // Tiles in flight per warp: about 12 KB of them (more bits, fewer tiles).
  static constexpr int kPreferredStages = kBytes <= 3 * 1024 ? 4 : kBytes <= 6 * 1024 ? 3 : 2;
  // A warp's share of shared memory at two blocks per multiprocessor (228 KB, less each block's
  // static 2.3 KB and reserved 1 KB).
  static constexpr int kWarpBudget = (228 * 1024 / 2 - 3400) / kDecodeWarps;
  // Whether a tail tile's rows (2 * kTailRowsBytes) fit beside the stages, with at least three
  // stages left: then a warp's first tail tile is copied with the prologue and attended first,
  // instead of in one more round trip after its packed tiles (KIVI-2: 4 stages become 3).
  static constexpr int kTailRows = 2 * kTailRowsBytes<DIM>;
  static constexpr bool kTailApart =
      kPreferredStages * kBytes + kTailRows <= kWarpBudget ||
      (kPreferredStages > 3 && 3 * kBytes + kTailRows <= kWarpBudget);
  static constexpr int kStages =
      kTailApart && kPreferredStages * kBytes + kTailRows > kWarpBudget ? 3 : kPreferredStages;
  // Where a warp's tail rows go: after its stages, or over them once its packed tiles are done.
  static constexpr int kTailOffset = kTailApart ? kStages * kBytes : 0;
  static constexpr int kWarpBytes =
      kTailOffset + kTailRows > kStages* kBytes ? kTailOffset + kTailRows : kStages* kBytes;
  static constexpr int kBlockBytes = kDecodeWarps * kWarpBytes;
};
// The key part of a stage is where copy_key_tile and packed_tile_scores put and find it.
template <int DIM, int KB, int VB>
inline constexpr bool kKeyPartShared =
    MmaStage<DIM, KB, VB>::kKeyCodes ==
    TailKeyStage<DIM, KB>::kCodes&& MmaStage<DIM, KB, VB>::kKeyScale ==
    TailKeyStage<DIM, KB>::kScale&& MmaStage<DIM, KB, VB>::kKeyMin == TailKeyStage<DIM, KB>::kMin;

// Two T values (at shared or global addresses) as one pair register.
template <class T>
__device__ __forceinline__ uint32_t pair_of(const T* lo, const T* hi) {
  return static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(lo)) |
         (static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(hi)) << 16);
}

// Scores over a packed key tile staged at `stage` (the key part of MmaStage), transposed:
// s[mt][i] = token 16 mt + g + 8 (i / 2), head 2c + i % 2, in base 2 (score_scale: the softmax
// scale * log2 e, and for fp16 the queries' power-of-two prescale undone); every token is valid.
//   acc  = codes . (q * scale)^T: A = the codes (exact small integers), B = q * scale, one
//          HMUL2 per pair; bf16 adds a second MMA with B = the rounding error of q * scale
//          (bf16's 8-bit mantissa alone costs about 1% in the output);
//   bias = q . min, one more MMA per k-tile whose A holds min in every row (so every row of the
//          result holds the bias of its head: no shuffle).
template <class T, int DIM, int KB>
__device__ __forceinline__ void packed_tile_scores(const unsigned char* stage,
                                                   const uint32_t (*q_frag)[2], float score_scale,
                                                   float (&s)[2][4]) {
  using KeyStage = TailKeyStage<DIM, KB>;       // (the key part of MmaStage: same offsets)
  constexpr int kLaneKeyWords = DIM * KB / 32;  // a lane's key code words per tile
  constexpr int kKeyPer = 16 / KB;              // code pairs per word half
  const int lane = threadIdx.x % 32, c = lane % 4;
  const uint32_t* scale2 =
      reinterpret_cast<const uint32_t*>(stage + KeyStage::kScale);  // channel pairs
  const uint32_t* min2 = reinterpret_cast<const uint32_t*>(stage + KeyStage::kMin);
  const uint4* words =
      reinterpret_cast<const uint4*>(stage + KeyStage::kCodes) + lane * (kLaneKeyWords / 4);
  float acc[2][4], bias[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[mt][i] = 0.0f;
#pragma unroll
  for (int chunk = 0; chunk < kLaneKeyWords / 4; ++chunk) {
    const uint4 v = words[chunk];
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
    constexpr int kWordsPerKt = 8 / kKeyPer;  // 8 pairs (hi, nt) per k-tile
#pragma unroll
    for (int kk = 0; kk < 4 / kWordsPerKt; ++kk) {
      const int kt = chunk * (4 / kWordsPerKt) + kk, pair0 = 8 * kt + c;
      const uint32_t b0 = mul_pair<T>(q_frag[kt][0], scale2[pair0]);
      const uint32_t b1 = mul_pair<T>(q_frag[kt][1], scale2[pair0 + 4]);
      const uint32_t min01 = min2[pair0], min89 = min2[pair0 + 4];
      mma_16816<T>(bias, min01, min01, min89, min89, q_frag[kt][0], q_frag[kt][1]);
      // pairs[4 hi + n]: token 8 n + g, channels 16 kt + 8 hi + 2c, +1 (tile order)
      uint32_t pairs[8];
#pragma unroll
      for (int j = 0; j < kWordsPerKt; ++j)
        unpack_halves<T, KB>(w[kk * kWordsPerKt + j], pairs + j * kKeyPer);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
        mma_16816<T>(acc[mt], pairs[2 * mt], pairs[2 * mt + 1], pairs[4 + 2 * mt],
                     pairs[5 + 2 * mt], b0, b1);
      if constexpr (!std::is_same_v<T, __half>) {
        const uint32_t rest0 = product_rest<T>(q_frag[kt][0], scale2[pair0], b0);
        const uint32_t rest1 = product_rest<T>(q_frag[kt][1], scale2[pair0 + 4], b1);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
          mma_16816<T>(acc[mt], pairs[2 * mt], pairs[2 * mt + 1], pairs[4 + 2 * mt],
                       pairs[5 + 2 * mt], rest0, rest1);
      }
    }
  }
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int i = 0; i < 4; ++i) s[mt][i] = (acc[mt][i] + bias[i % 2]) * score_scale;
}

// fp16 only: the A operand q * scale must not overflow (|q * scale| > 65504 with a key group of
// huge range). Scaling the queries by 2^-e so that |q| <= 1 makes that impossible (|scale| <=
// 65504): the products round exactly as before (a power of two commutes with rounding, short of
// subnormals) and 2^e moves into the float score scale.
template <class T, int KT>
__device__ __forceinline__ float prescale_queries(uint32_t (&q_frag)[KT][2], float score_scale) {
  if constexpr (!std::is_same_v<T, __half>) {
    return score_scale;
  } else {
    float largest = 0.0f;
#pragma unroll
    for (int kt = 0; kt < KT; ++kt)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const float2 x = pair_to_float2(q_frag[kt][i], T{});
        largest = fmaxf(largest, fmaxf(fabsf(x.x), fabsf(x.y)));
      }
    largest = warp_max(largest);  // every warp holds all of the block's query rows
    int e = 0;
    frexpf(largest, &e);  // largest < 2^e
    if (e <= 0) return score_scale;
#pragma unroll
    for (int kt = 0; kt < KT; ++kt)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const float2 x = pair_to_float2(q_frag[kt][i], T{});
        q_frag[kt][i] = pack_pair<T>(ldexpf(x.x, -e), ldexpf(x.y, -e));
      }
    return ldexpf(score_scale, e);
  }
}

// o += P V over one packed value tile staged at `stage` (MmaStage layout), transposed: for
// k-tile kt (tokens 16 kt + [0, 16)) and output m-tile mt (channels 16 mt + g, + 8), A = the
// value codes (tokens 16 kt + 2c, +1 and + 8; exact small integers), B = (P * scale)^T of the
// m-tile's channel group; the min term adds sum_t P[r][t] * min[t][group] with one more MMA per
// k-tile whose A holds min^T (row = group, so o_min row g is group g).
//   fp16: P^T transposed once, times the scales of the lane's tokens (one HMUL2 per pair);
//   bf16: each token's P times its scales in float (one rounding, as the reference rounds),
//         then transposed per group.
template <class T, int DIM, int KB, int VB>
__device__ __forceinline__ void packed_tile_output(const unsigned char* stage, int group,
                                                   int group_log2, const float (&p)[2][4],
                                                   float (&o)[DIM / 16][4], float (&o_min)[4]) {
  using Stage = MmaStage<DIM, KB, VB>;
  constexpr int kMostGroups = Stage::kMostGroups;  // 32-channel blocks of the output
  constexpr int kValuePer = 16 / VB;
  constexpr int kValueChunkBits = DIM * VB / 8;  // one lane's codes of one token
  constexpr int v_words = DIM * VB / 32;
  const int lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int v_groups = DIM >> group_log2;
  const int block_group_shift = group_log2 - 5;  // 32-channel block j is in value group j >> this
  const T* stage_scale = reinterpret_cast<const T*>(stage + Stage::kValueScale);
  const T* stage_min = reinterpret_cast<const T*>(stage + Stage::kValueMin);
  const uint32_t* stage_codes = reinterpret_cast<const uint32_t*>(stage + Stage::kValueCodes);
#pragma unroll
  for (int kt = 0; kt < 2; ++kt) {
    int t[4];  // tile-local tokens of this lane's (transposed) k rows
    t[0] = 16 * kt + 2 * c;
    t[1] = t[0] + 1;
    t[2] = t[0] + 8;
    t[3] = t[0] + 9;
    uint32_t pt0, pt1;  // P^T, unscaled: the min term's B
    transposed_probs<T>(p[kt], 1.0f, 1.0f, pt0, pt1);
    uint32_t b_scaled[kMostGroups][2];  // B = (P * scale)^T of 32-channel block j's group
    uint32_t min01 = 0u, min89 = 0u;    // A of the min term: row g = the minima of group g
    if (group == 32) {                  // a token's scales (and minima) are one 4- or 8-byte vector
      constexpr int kWords = kMostGroups / 2;
      uint32_t sc[4][kWords], mn[4][kWords];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        shared_words<kWords>(reinterpret_cast<const uint32_t*>(stage_scale + t[i] * kMostGroups),
                             sc[i]);
        shared_words<kWords>(reinterpret_cast<const uint32_t*>(stage_min + t[i] * kMostGroups),
                             mn[i]);
      }
      if constexpr (std::is_same_v<T, __half>) {
#pragma unroll
        for (int j = 0; j < kMostGroups; ++j) {
          b_scaled[j][0] = mul_pair<T>(pt0, join_halves(sc[0][j / 2], sc[1][j / 2], j % 2));
          b_scaled[j][1] = mul_pair<T>(pt1, join_halves(sc[2][j / 2], sc[3][j / 2], j % 2));
        }
      }
      if (g < kMostGroups) {
        auto word = [&](int i) { return kWords == 2 && (g & 2) ? mn[i][kWords - 1] : mn[i][0]; };
        min01 = join_halves(word(0), word(1), g & 1);
        min89 = join_halves(word(2), word(3), g & 1);
      }
    } else {
      if constexpr (std::is_same_v<T, __half>) {
#pragma unroll
        for (int j = 0; j < kMostGroups; ++j) {
          const int gr = j >> block_group_shift;
          b_scaled[j][0] = mul_pair<T>(
              pt0, pair_of(stage_scale + t[0] * v_groups + gr, stage_scale + t[1] * v_groups + gr));
          b_scaled[j][1] = mul_pair<T>(
              pt1, pair_of(stage_scale + t[2] * v_groups + gr, stage_scale + t[3] * v_groups + gr));
        }
      }
      if (g < v_groups) {
        min01 = pair_of(stage_min + t[0] * v_groups + g, stage_min + t[1] * v_groups + g);
        min89 = pair_of(stage_min + t[2] * v_groups + g, stage_min + t[3] * v_groups + g);
      }
    }
    if constexpr (!std::is_same_v<T, __half>) {
      const int tok0 = 16 * kt + g, tok1 = tok0 + 8;  // the lane's tokens before the transpose
#pragma unroll
      for (int j = 0; j < kMostGroups; ++j) {
        const int gr = j >> block_group_shift;
        transposed_probs<T>(p[kt], to_float(stage_scale[tok0 * v_groups + gr]),
                            to_float(stage_scale[tok1 * v_groups + gr]), b_scaled[j][0],
                            b_scaled[j][1]);
      }
    }
    mma_16816<T>(o_min, min01, 0u, min89, 0u, pt0, pt1);
    // A fragments: the codes of channels 8 n + g for tokens (t0, t1) and (t2, t3), a 16-bit
    // portion of this lane's run of codes at a time (n-tile n = q * kValuePer + i).
    if constexpr (kValueChunkBits >= 32) {
      constexpr int kWords = kValueChunkBits / 32;
      uint32_t w[4][kWords];
#pragma unroll
      for (int i = 0; i < 4; ++i)
        shared_words<kWords>(stage_codes + t[i] * v_words + g * kWords, w[i]);
#pragma unroll
      for (int q = 0; q < 2 * kWords; ++q) {
        uint32_t lo[kValuePer], hi[kValuePer];
        unpack_halves<T, VB>(join_halves(w[0][q / 2], w[1][q / 2], q % 2), lo);
        unpack_halves<T, VB>(join_halves(w[2][q / 2], w[3][q / 2], q % 2), hi);
#pragma unroll
        for (int i = 0; i < kValuePer; i += 2) {
          const int mt = (q * kValuePer + i) / 2;
          mma_16816<T>(o[mt], lo[i], lo[i + 1], hi[i], hi[i + 1], b_scaled[mt / 2][0],
                       b_scaled[mt / 2][1]);
        }
      }
    } else {  // head_dim 64 at 2 bits: the run is one half of word g / 2
      const bool high = g % 2;
      uint32_t lo[kValuePer], hi[kValuePer];
      unpack_halves<T, VB>(join_halves(stage_codes[t[0] * v_words + g / 2],
                                       stage_codes[t[1] * v_words + g / 2], high),
                           lo);
      unpack_halves<T, VB>(join_halves(stage_codes[t[2] * v_words + g / 2],
                                       stage_codes[t[3] * v_words + g / 2], high),
                           hi);
#pragma unroll
      for (int mt = 0; mt < DIM / 16; ++mt)
        mma_16816<T>(o[mt], lo[2 * mt], lo[2 * mt + 1], hi[2 * mt], hi[2 * mt + 1],
                     b_scaled[mt / 2][0], b_scaled[mt / 2][1]);
    }
  }
}

// A tail tile [t0, t1) of the row (t1 - t0 <= 32; decode_tail.cuh) into a warp's `smem`
// (2 * kTailRowsBytes): its copies (one commit group) and its packed rows' value parameters.
template <class T, int DIM, int KB, int VB>
__device__ __forceinline__ void issue_tail_tile(const RowView<T>& row, int t0, int t1,
                                                unsigned char* smem, TailValueParams<DIM>& params) {
  if (t0 < t1) issue_tail_copies<T, DIM, KB, VB>(row, t0, t1, smem, params);
  copy_async_commit();
}

// o, m, l += the tail tile [t0, t1) issued into `smem` by issue_tail_tile, once its copies are in.
template <class T, int DIM, int KB, int VB>
__device__ __forceinline__ void attend_tail_tile(const RowView<T>& row, int t0, int t1,
                                                 unsigned char* smem,
                                                 const TailValueParams<DIM>& params,
                                                 const uint32_t (*q_frag)[2], float score_scale,
                                                 float (&m)[2], float (&l)[2],
                                                 float (&o)[DIM / 16][4], float (&o_min)[4]) {
  const int lane = threadIdx.x % 32, g = lane / 4;
  T* value_rows = reinterpret_cast<T*>(smem + kTailRowsBytes<DIM>);
  // Packed value rows, each by its lane, in place (its codes came by its own copies).
  if (t0 + lane < min(t1, row.vq))
    dequantize_tail_row<T, DIM, VB>(value_rows, row.group_log2, params);
  __syncwarp();  // every lane's rows are in
  float s[2][4], p[2][4];
  if (t0 < row.kq) {  // a whole packed key tile, staged as the main loop stages one
    packed_tile_scores<T, DIM, KB>(smem, q_frag, score_scale, s);
  } else {
    float acc[2][4];
    row_tile_scores<T, DIM>(reinterpret_cast<const T*>(smem), q_frag, acc);
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        s[mt][i] = t0 + 16 * mt + g + 8 * (i / 2) < t1 ? acc[mt][i] * score_scale : -INFINITY;
  }
  softmax_tile<DIM / 16>(s, m, l, o, o_min, p);
  row_tile_output<T, DIM>(value_rows, p, o);
  __syncwarp();  // the next tail tile reuses the rows
}

// The group's query heads as rows 0..7 of q_s (zero past rep), exactly as stored, copied with
// cp.async (one commit group) so that the first tiles' copies are in flight with them.
template <class T, int DIM>
__device__ __forceinline__ void issue_query_copies(const DecodeAttention& a, int b, int h, int rep,
                                                   T (*q_s)[DIM]) {
  constexpr int kChunks = DIM / 8;
  for (int i = threadIdx.x; i < 8 * kChunks; i += blockDim.x) {
    const int r = i / kChunks, chunk = i % kChunks;
    T* dst = &q_s[r][8 * chunk];
    if (r >= rep) {
      *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
      continue;
    }
    const T* src =
        static_cast<const T*>(a.q) + b * a.q_stride[0] + (h * rep + r) * a.q_stride[1] + 8 * chunk;
    if ((reinterpret_cast<uintptr_t>(src) & 15u) == 0u) {
      copy_async16(dst, src);
    } else {  // a query view that is not 16-byte aligned
#pragma unroll
      for (int e = 0; e < 8; ++e) dst[e] = src[e];
    }
  }
  copy_async_commit();
}

template <class T, int DIM, int KB, int VB>
__global__ void __launch_bounds__(kDecodeWarps * 32, KIVI_DECODE_MIN_BLOCKS)
    decode_mma_kernel(DecodeAttention a, int tiles_per_split) {
  using Stage = MmaStage<DIM, KB, VB>;
  static_assert(kKeyPartShared<DIM, KB, VB>, "main and tail stages share the key part's layout");
  static_assert(Stage::kWarpBytes >= Stage::kTailOffset + Stage::kTailRows,
                "a warp's shared memory holds its tail rows");
  constexpr int KT = DIM / 16;  // k-tiles over channels (scores)
  constexpr int MT = DIM / 16;  // m-tiles over channels (output)
  // 1-d grid: the splits of (row, kv head) pair = blockIdx.x / splits.
  const int pair = blockIdx.x / a.splits, split = blockIdx.x % a.splits;
  const int b = pair / a.kv_heads, h = pair % a.kv_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int rep = a.q_heads / a.kv_heads;
  const int length = a.length[b], kq = a.key_quantized[b], vq = a.value_quantized[b];
  // Tiles packed on both sides go through the main loop; [packed_end, length) is the tail. (An
  // idle row has length 0 while its quantized counts stay as they are.)
  const int packed_end = min(min(kq, vq / kTile * kTile), length / kTile * kTile);
  const int tile_begin = split * tiles_per_split;
  const int range_end = min((length + kTile - 1) / kTile, tile_begin + tiles_per_split);
  const int tile_end = min(packed_end / kTile, range_end);  // then the tail's tiles
  // group_size: a power of two from 32 to DIM (decode_supported), so shifts replace divisions.
  const int group = a.group_size, group_log2 = __ffs(group) - 1, v_groups = DIM >> group_log2;

  const DecodeStamp stamp(a, b, h, split);
  stamp(0);
  extern __shared__ __align__(16) unsigned char dynamic_smem[];  // per warp: Stage::kWarpBytes
  // Merge state of the 4 warps.
  __shared__ float max_s[kDecodeWarps][8], sum_s[kDecodeWarps][8];
  // The queries exactly as stored: the softmax scale (in base 2) multiplies the float scores
  // instead, so no extra rounding enters the operands.
  __shared__ __align__(16) T q_s[8][DIM];
  const RowView<T> row = row_view<T>(a, b, h, group_log2);

  // Starts copying the packed data of this warp's k-th tile into stage k % kStages (one commit
  // group per call, empty past the range, so the wait counts stay uniform).
  unsigned char* stages = dynamic_smem + warp * Stage::kWarpBytes;
  PageCursor cursor;  // the warp's tiles come in increasing order
  auto issue = [&](int k) {
    const int tile = tile_begin + warp + k * kDecodeWarps;
    unsigned char* dst = stages + (k % Stage::kStages) * Stage::kBytes;
    if (tile < tile_end) {
      const PackedAt at = cursor.at(a.table, b, tile * kTile);
      copy_key_tile<DIM, KB>(dst, row, at);  // (the stage's key part: TailKeyStage's offsets)
      const auto values = row.template packed_values<DIM, VB>(at);
#pragma unroll
      for (int i = lane; i < DIM * VB / 4; i += 32)
        copy_async16(dst + Stage::kValueCodes + 16 * i, values.codes + 4 * i);
      if (lane < 4 * v_groups) {  // 32 tokens x v_groups x 2 bytes
        copy_async16(dst + Stage::kValueScale + 16 * lane, values.scale + 8 * lane);
        copy_async16(dst + Stage::kValueMin + 16 * lane, values.min + 8 * lane);
      }
    }
    copy_async_commit();
  };

  // The warp's softmax state in the transposed layout (decode_tail.cuh): heads 2c, 2c + 1.
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  float o[MT][4], o_min[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // o_min: value group g, heads 2c, 2c + 1
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;

  // Everything the block reads first is in flight at once: the queries and the first packed
  // tiles.
  issue_query_copies<T, DIM>(a, b, h, rep, q_s);
#pragma unroll
  for (int k = 0; k + 1 < Stage::kStages; ++k) issue(k);
  copy_async_wait<Stage::kStages - 1>();  // the queries' group is the oldest
  __syncthreads();
  // With room of its own (Stage::kTailApart), the warp's first tail tile is copied under its
  // packed tiles and attended after them without another round trip. Its copies go out a few
  // tiles into the loop (tail_issue_k), not with the prologue: a tail tile is ~16 KB of rows
  // against ~3 KB per packed tile, and issued while every block's prologue loads were in
  // flight they held the last split's warps ~2.5 us (phase timer p1 at batch 16 x 4K, 8 x 8K)
  // while the DRAM queue drained; a few tiles later the loop leaves bandwidth to spare.
  unsigned char* tail_smem = stages + Stage::kTailOffset;
  TailValueParams<DIM> tail_params;
  // The warp's packed tiles, and its first tile past them (tiles tile_begin + warp + 4k).
  const int packed_tiles = max(0, (tile_end - tile_begin - warp + 3) / kDecodeWarps);
  const int first_tail = tile_begin + warp + kDecodeWarps * packed_tiles;
  const bool early_tail = Stage::kTailApart && first_tail < range_end;
  // Issued in iteration tail_issue_k, after that iteration's packed copies (or after the loop
  // when the warp has no packed tile); at least one packed tile after it hides its latency.
  const int tail_issue_k = max(0, min(kTailIssueDelay, packed_tiles - 2));
  auto issue_early_tail = [&] {
    issue_tail_tile<T, DIM, KB, VB>(
        row, first_tail * kTile, min(length, first_tail * kTile + kTile), tail_smem, tail_params);
  };
  stamp(1);
  // This lane's B fragments of the queries (and the bias MMA's): head g, channels 16 kt + 2c,
  // +1 and + 8.
  uint32_t q_frag[KT][2];
#pragma unroll
  for (int kt = 0; kt < KT; ++kt) {
    q_frag[kt][0] = *reinterpret_cast<const uint32_t*>(&q_s[g][16 * kt + 2 * c]);
    q_frag[kt][1] = *reinterpret_cast<const uint32_t*>(&q_s[g][16 * kt + 2 * c + 8]);
  }
  // softmax scale * log2(e), and for fp16 the queries' prescale undone
  const float score_scale = prescale_queries<T>(q_frag, a.scale * 1.4426950408889634f);

  int tile = tile_begin + warp;
  for (int k = 0; tile < tile_end; tile += kDecodeWarps, ++k) {
    issue(k + Stage::kStages - 1);  // later tiles' copies overlap this tile's work
    if (early_tail && k == tail_issue_k) issue_early_tail();
    // Tile k's group is complete once only the groups after it are pending: the next
    // kStages - 1 tiles', and the early tail's once issued, while it comes after tile k's (its
    // group follows tile tail_issue_k + kStages - 1's).
    if (early_tail && k >= tail_issue_k && k <= tail_issue_k + Stage::kStages - 1)
      copy_async_wait<Stage::kStages>();
    else
      copy_async_wait<Stage::kStages - 1>();
    __syncwarp();
    const unsigned char* stage = stages + (k % Stage::kStages) * Stage::kBytes;
    float s[2][4], p[2][4];
    packed_tile_scores<T, DIM, KB>(stage, q_frag, score_scale, s);
    softmax_tile<MT>(s, m, l, o, o_min, p);
    packed_tile_output<T, DIM, KB, VB>(stage, group, group_log2, p, o, o_min);
    __syncwarp();  // the stage is refilled kStages - 1 tiles later
  }
  if (early_tail && packed_tiles == 0) issue_early_tail();  // (no loop iteration issued it)
  copy_async_wait<0>();
  __syncwarp();  // the warp's stages are free for the rest of its share of the tail
  if (early_tail) {
    attend_tail_tile<T, DIM, KB, VB>(row, first_tail * kTile,
                                     min(length, first_tail * kTile + kTile), tail_smem,
                                     tail_params, q_frag, score_scale, m, l, o, o_min);
    tile = first_tail + kDecodeWarps;
  }
  for (; tile < range_end; tile += kDecodeWarps) {
    const int t0 = tile * kTile, t1 = min(length, t0 + kTile);
    issue_tail_tile<T, DIM, KB, VB>(row, t0, t1, tail_smem, tail_params);
    copy_async_wait<0>();
    attend_tail_tile<T, DIM, KB, VB>(row, t0, t1, tail_smem, tail_params, q_frag, score_scale, m, l,
                                     o, o_min);
  }
  __syncthreads();  // every warp is done with its stages: the shared memory is free
  stamp(2);

  float* acc_all = reinterpret_cast<float*>(dynamic_smem);  // [kDecodeWarps][8][DIM]

  // ---- merge: each head's sum over g; the min term moved to its channels; warps combined
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int offset = 4; offset < 32; offset *= 2)
      l[j] += __shfl_xor_sync(0xffffffffu, l[j], offset);
  float* acc_s = acc_all + warp * 8 * DIM;  // [head][channel]
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      // channel d's group (the same for the m-tile's 16 channels: groups are >= 32 wide) holds
      // its min term in o_min of lane (group, c)
      const int d = 16 * mt + 8 * half + g, source = (((16 * mt) >> group_log2) << 2) | c;
      const float add0 = __shfl_sync(0xffffffffu, o_min[0], source);
      const float add1 = __shfl_sync(0xffffffffu, o_min[1], source);
      acc_s[(2 * c) * DIM + d] = o[mt][2 * half] + add0;
      acc_s[(2 * c + 1) * DIM + d] = o[mt][2 * half + 1] + add1;
    }
  if (g == 0) {
    max_s[warp][2 * c] = m[0];
    max_s[warp][2 * c + 1] = m[1];
    sum_s[warp][2 * c] = l[0];
    sum_s[warp][2 * c + 1] = l[1];
  }
  __syncthreads();

  merge_and_finish<T, DIM>(a, b, h, rep, split, max_s, sum_s, acc_all, stamp);
}

// Resident blocks per multiprocessor of this instantiation (for choosing the splits).
template <class T, int DIM, int KB, int VB>
int decode_mma_occupancy() {
  constexpr int kBytes = MmaStage<DIM, KB, VB>::kBlockBytes;
  static const int blocks = [] {
    cudaFuncSetAttribute(decode_mma_kernel<T, DIM, KB, VB>,
                         cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes);
    // All of the unified L1 as shared memory: the kernel reads through its stages, not L1.
    cudaFuncSetAttribute(decode_mma_kernel<T, DIM, KB, VB>,
                         cudaFuncAttributePreferredSharedMemoryCarveout,
                         cudaSharedmemCarveoutMaxShared);
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_mma_kernel<T, DIM, KB, VB>,
                                                      kDecodeWarps * 32, kBytes) != cudaSuccess)
      n = 1;
    return n > 0 ? n : 1;
  }();
  return blocks;
}

template <class T, int DIM, int KB, int VB>
void launch_decode_mma(const DecodeAttention& a, int tiles_per_split, cudaStream_t stream) {
  constexpr int kBytes = MmaStage<DIM, KB, VB>::kBlockBytes;
  static_assert(kBytes >= kDecodeWarps * 8 * DIM * 4, "the stages hold the merge's accumulators");
  static_assert(kBytes >= 8 * kMostDecodeSplits * 4, "the last block holds the splits' weights");
  static_assert(kBytes >= (kClusterStateOffset<DIM> + kClusterStateFloats<DIM>)*4,
                "the stages hold a cluster block's state");
  (void)decode_mma_occupancy<T, DIM, KB, VB>();  // sets the shared-memory attribute once
  const unsigned blocks = unsigned(a.rows) * unsigned(a.kv_heads) * unsigned(a.splits);
  if (!a.cluster_splits) {
    decode_mma_kernel<T, DIM, KB, VB>
        <<<blocks, kDecodeWarps * 32, kBytes, stream>>>(a, tiles_per_split);
    return;
  }
  // One cluster per (row, kv head): its splits are consecutive blocks.
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(blocks);
  config.blockDim = dim3(kDecodeWarps * 32);
  config.dynamicSmemBytes = kBytes;
  config.stream = stream;
  cudaLaunchAttribute cluster;
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = unsigned(a.splits);
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  config.attrs = &cluster;
  config.numAttrs = 1;
  cudaLaunchKernelEx(&config, decode_mma_kernel<T, DIM, KB, VB>, a, tiles_per_split);
}

#define KIVI_DECLARE_DECODE_MMA_BITS(T, DIM, KB)                                     \
  extern template void launch_decode_mma<T, DIM, KB, 2>(const DecodeAttention&, int, \
                                                        cudaStream_t);               \
  extern template void launch_decode_mma<T, DIM, KB, 4>(const DecodeAttention&, int, \
                                                        cudaStream_t);               \
  extern template void launch_decode_mma<T, DIM, KB, 8>(const DecodeAttention&, int, \
                                                        cudaStream_t);               \
  extern template int decode_mma_occupancy<T, DIM, KB, 2>();                         \
  extern template int decode_mma_occupancy<T, DIM, KB, 4>();                         \
  extern template int decode_mma_occupancy<T, DIM, KB, 8>();
#define KIVI_DECLARE_DECODE_MMA(T, DIM)   \
  KIVI_DECLARE_DECODE_MMA_BITS(T, DIM, 2) \
  KIVI_DECLARE_DECODE_MMA_BITS(T, DIM, 4) KIVI_DECLARE_DECODE_MMA_BITS(T, DIM, 8)
KIVI_DECLARE_DECODE_MMA(__half, 64)
KIVI_DECLARE_DECODE_MMA(__half, 128)
KIVI_DECLARE_DECODE_MMA(__nv_bfloat16, 64)
KIVI_DECLARE_DECODE_MMA(__nv_bfloat16, 128)

}  // namespace kivi::kivi_cache::cuda
