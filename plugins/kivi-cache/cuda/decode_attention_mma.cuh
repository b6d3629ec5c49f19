// The fused KIVI decode kernel on tensor cores (fp16 and bf16 storage), reading the cache's
// tile order (tile_order.h) so that its inner loop costs about one instruction per code.
//
// Grid (splits, kv heads, rows); 4 warps per block, each taking every fourth 32-token tile of
// the block's range with an online softmax of its own; warps merge in shared memory and the
// splits are combined by a second kernel (decode_dispatch.cu). All m16n8k16 MMAs put the GQA
// group's query heads in rows 0..7:
//   scores  S[r][t] = sum_d (q[r][d] * scale[d]) * code[d][t] + sum_d q[r][d] * min[d]:
//           A = q * scale (one HMUL2 per pair, per tile), B = the codes, exact small integers;
//           the bias q . min is one more MMA whose B holds min in column 0;
//   output  O[r][d] = sum_t (P[r][t] * scale[t][c]) * code[t][d] + sum_t P[r][t] * min[t][c]
//           for channel group c of d: A = P * scale, B = the codes; the min term is one more MMA
//           whose B holds min[t][c] in column c.
// A lane's key codes of a tile are 16-byte words in shared memory that give its B fragments
// directly; a lane's value codes of two tokens become B fragments with one byte permute. Codes
// become fp16/bf16 with one LOP3 and one HFMA2 per pair (code_convert.cuh).
//
// Memory: each warp keeps kStages tiles in flight, copied with cp.async into its own stages
// (the packed codes, scales and minima of keys and values), so the loads of several tiles
// overlap the arithmetic. Residual tokens, and tiles that straddle the value residual, are read
// straight from global memory by a general path.
#pragma once

#include "code_convert.cuh"
#include "decode_attention.cuh"
#include "mma_fragments.cuh"
#include "tile_slots.cuh"

namespace kivi::kivi_cache::cuda {

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
  static constexpr int kStages = kBytes <= 3 * 1024 ? 4 : kBytes <= 6 * 1024 ? 3 : 2;
  static constexpr int kBlockBytes = kDecodeWarps * kStages * kBytes;
};

// Two T values (at shared or global addresses) as one pair register.
template <class T>
__device__ __forceinline__ uint32_t pair_of(const T* lo, const T* hi) {
  return static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(lo)) |
         (static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(hi)) << 16);
}

template <class T, int DIM, int KB, int VB>
__global__ void __launch_bounds__(kDecodeWarps * 32)
    decode_mma_kernel(DecodeAttention a, int tiles_per_split) {
  using Stage = MmaStage<DIM, KB, VB>;
  constexpr int KT = DIM / 16;                     // k-tiles over channels (scores)
  constexpr int NT = DIM / 8;                      // n-tiles over channels (output)
  constexpr int kMostGroups = Stage::kMostGroups;  // 32-channel blocks; value group of block j
                                                   // is j * 32 / group_size
  constexpr int kLaneKeyWords = DIM * KB / 32;     // a lane's key code words per tile
  constexpr int kKeyPer = 16 / KB, kValuePer = 16 / VB;  // code pairs per word half
  constexpr int kValueChunkBits = DIM * VB / 8;    // one lane's codes of one token
  const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int rep = a.q_heads / a.kv_heads;
  const int length = a.length[b], kq = a.key_quantized[b], vq = a.value_quantized[b];
  const int tiles = (length + kTile - 1) / kTile;
  const int tile_begin = split * tiles_per_split;
  const int tile_end = min(tiles, tile_begin + tiles_per_split);

  extern __shared__ __align__(16) unsigned char dynamic_smem[];  // per warp: kStages stages
  __shared__ float max_s[kDecodeWarps][8], sum_s[kDecodeWarps][8];
  // The group's query heads as rows 0..7 (zero past rep), exactly as stored: the softmax scale
  // (in base 2) multiplies the float scores instead, so no extra rounding enters the operands.
  __shared__ __align__(16) T q_s[8][DIM];
  for (int i = threadIdx.x; i < 8 * DIM; i += blockDim.x) {
    const int r = i / DIM, d = i % DIM;
    q_s[r][d] = r < rep ? static_cast<const T*>(a.q)[b * a.q_stride[0] + (h * rep + r) * a.q_stride[1] + d]
                        : from_float<T>(0.0f);
  }
  __syncthreads();
  // This lane's A fragments of the queries: row g, channels 16 kt + 2c + {0, 1} and + 8.
  uint32_t q_frag[KT][2];
#pragma unroll
  for (int kt = 0; kt < KT; ++kt) {
    q_frag[kt][0] = *reinterpret_cast<const uint32_t*>(&q_s[g][16 * kt + 2 * c]);
    q_frag[kt][1] = *reinterpret_cast<const uint32_t*>(&q_s[g][16 * kt + 2 * c + 8]);
  }
  const float score_scale = a.scale * 1.4426950408889634f;  // softmax scale * log2(e)

  const int group = a.group_size, v_groups = DIM / group;
  const int v_words = DIM * VB / 32;
  const T* key_scale = static_cast<const T*>(a.key_scale) + b * a.key_scale_stride[0] + h * a.key_scale_stride[1];
  const T* key_min = static_cast<const T*>(a.key_min) + b * a.key_scale_stride[0] + h * a.key_scale_stride[1];
  const uint32_t* key_codes = reinterpret_cast<const uint32_t*>(a.key_codes) + b * a.key_codes_stride[0] + h * a.key_codes_stride[1];
  const T* key_res = static_cast<const T*>(a.key_residual) + b * a.key_residual_stride[0] + h * a.key_residual_stride[1];
  const uint32_t* value_codes = reinterpret_cast<const uint32_t*>(a.value_codes) + b * a.value_codes_stride[0] + h * a.value_codes_stride[1];
  const T* value_scale = static_cast<const T*>(a.value_scale) + b * a.value_scale_stride[0] + h * a.value_scale_stride[1];
  const T* value_min = static_cast<const T*>(a.value_min) + b * a.value_scale_stride[0] + h * a.value_scale_stride[1];
  const T* value_res = static_cast<const T*>(a.value_residual) + b * a.value_residual_stride[0] + h * a.value_residual_stride[1];

  // Starts copying the packed data of this warp's k-th tile into stage k % kStages (one commit
  // group per call, empty past the range, so the wait counts stay uniform).
  unsigned char* stages = dynamic_smem + warp * Stage::kStages * Stage::kBytes;
  auto issue = [&](int k) {
    const int tile = tile_begin + warp + k * kDecodeWarps;
    unsigned char* dst = stages + (k % Stage::kStages) * Stage::kBytes;
    const int p0 = tile * kTile;
    if (tile < tile_end && p0 < kq) {
      const int gi = p0 / group, tile_in_group = (p0 % group) / kTile;
      const uint32_t* src = key_codes + int64_t{gi} * DIM * group * KB / 32 + tile_in_group * DIM * KB;
      for (int i = lane; i < DIM * KB / 4; i += 32) copy_async16(dst + Stage::kKeyCodes + 16 * i, src + 4 * i);
      for (int i = lane; i < DIM / 8; i += 32) {
        copy_async16(dst + Stage::kKeyScale + 16 * i, key_scale + int64_t{gi} * DIM + 8 * i);
        copy_async16(dst + Stage::kKeyMin + 16 * i, key_min + int64_t{gi} * DIM + 8 * i);
      }
    }
    if (tile < tile_end && p0 + kTile <= vq) {
      const uint32_t* src = value_codes + int64_t{p0} * v_words;
      for (int i = lane; i < DIM * VB / 4; i += 32) copy_async16(dst + Stage::kValueCodes + 16 * i, src + 4 * i);
      for (int i = lane; i < 4 * v_groups; i += 32) {  // 32 tokens x v_groups x 2 bytes
        copy_async16(dst + Stage::kValueScale + 16 * i, value_scale + int64_t{p0} * v_groups + 8 * i);
        copy_async16(dst + Stage::kValueMin + 16 * i, value_min + int64_t{p0} * v_groups + 8 * i);
      }
    }
    copy_async_commit();
  };

  float m = -INFINITY, l = 0.0f;  // row g: running max (base 2) and this lane's share of the sum
  float o[NT][2], o_min[2] = {0.0f, 0.0f};  // C fragments: row g, channels 8 nt + 2c + {0, 1};
                                            // o_min: row g, value groups 2c, 2c + 1
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) o[nt][0] = o[nt][1] = 0.0f;

#pragma unroll
  for (int k = 0; k + 1 < Stage::kStages; ++k) issue(k);
  int k = 0;
  for (int tile = tile_begin + warp; tile < tile_end; tile += kDecodeWarps, ++k) {
    issue(k + Stage::kStages - 1);  // later tiles' copies overlap this tile's work
    copy_async_wait<Stage::kStages - 1>();
    __syncwarp();
    const unsigned char* stage = stages + (k % Stage::kStages) * Stage::kBytes;
    const int p0 = tile * kTile;

    // ---- scores: s[nt] = row g, tokens p0 + 8 nt + 2c + {0, 1}
    float s[4][2] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}};
    if (p0 < kq) {
      const uint32_t* scale2 = reinterpret_cast<const uint32_t*>(stage + Stage::kKeyScale);  // channel pairs
      const uint32_t* min2 = reinterpret_cast<const uint32_t*>(stage + Stage::kKeyMin);
      const uint4* words = reinterpret_cast<const uint4*>(stage + Stage::kKeyCodes) + lane * (kLaneKeyWords / 4);
      // acc += (q * scale / unscale) . codes; the bias q . min lands in column 0 of `bias`.
      // `safe`: A in float, divided by `unscale` (fp16 A would overflow at |q * scale| > 65504).
      auto packed_scores = [&](bool safe, float unscale, float (&acc)[4][2], float (&bias)[2]) {
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) acc[nt][0] = acc[nt][1] = 0.0f;
        bias[0] = bias[1] = 0.0f;
#pragma unroll
        for (int chunk = 0; chunk < kLaneKeyWords / 4; ++chunk) {
          const uint4 v = words[chunk];
          const uint32_t w[4] = {v.x, v.y, v.z, v.w};
          constexpr int kWordsPerKt = 8 / kKeyPer;  // 8 pairs (hi, nt) per k-tile
#pragma unroll
          for (int kk = 0; kk < 4 / kWordsPerKt; ++kk) {
            const int kt = chunk * (4 / kWordsPerKt) + kk, pair0 = 8 * kt + c;
            const uint32_t s01 = scale2[pair0], s89 = scale2[pair0 + 4];
            const uint32_t m01 = min2[pair0], m89 = min2[pair0 + 4];
            uint32_t a0, a2;
            if (!safe) {
              a0 = mul_pair<T>(q_frag[kt][0], s01);
              a2 = mul_pair<T>(q_frag[kt][1], s89);
            } else {
              const float2 q01 = pair_to_float2(q_frag[kt][0], T{}), q89 = pair_to_float2(q_frag[kt][1], T{});
              const float2 x01 = pair_to_float2(s01, T{}), x89 = pair_to_float2(s89, T{});
              a0 = pack_pair<T>(q01.x * x01.x / unscale, q01.y * x01.y / unscale);
              a2 = pack_pair<T>(q89.x * x89.x / unscale, q89.y * x89.y / unscale);
            }
            mma_rows8<T>(bias, q_frag[kt][0], q_frag[kt][1], g == 0 ? m01 : 0u, g == 0 ? m89 : 0u);
            uint32_t pairs[8];  // (hi, nt) at 4 hi + nt
#pragma unroll
            for (int j = 0; j < kWordsPerKt; ++j) unpack_halves<T, KB>(w[kk * kWordsPerKt + j], pairs + j * kKeyPer);
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) mma_rows8<T>(acc[nt], a0, a2, pairs[nt], pairs[4 + nt]);
          }
        }
      };
      float acc[4][2], bias[2], unscale = 1.0f;
      packed_scores(false, 1.0f, acc, bias);
      if constexpr (std::is_same_v<T, __half>) {
        // q * scale past fp16's range (a key group of huge range; rare): redo the tile with A
        // scaled down by a power of two.
        bool bad = false;
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) bad = bad || !isfinite(acc[nt][0]) || !isfinite(acc[nt][1]);
        if (__any_sync(0xffffffffu, bad)) {
          float largest = 0.0f;
          const uint32_t* scale_pairs = reinterpret_cast<const uint32_t*>(stage + Stage::kKeyScale);
#pragma unroll
          for (int kt = 0; kt < KT; ++kt) {
            const float2 q01 = pair_to_float2(q_frag[kt][0], T{}), q89 = pair_to_float2(q_frag[kt][1], T{});
            const float2 x01 = pair_to_float2(scale_pairs[8 * kt + c], T{});
            const float2 x89 = pair_to_float2(scale_pairs[8 * kt + c + 4], T{});
            largest = fmaxf(largest, fmaxf(fmaxf(fabsf(q01.x * x01.x), fabsf(q01.y * x01.y)),
                                           fmaxf(fabsf(q89.x * x89.x), fabsf(q89.y * x89.y))));
          }
#pragma unroll
          for (int offset = 16; offset > 0; offset >>= 1)
            largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, offset));
          unscale = largest > 16384.0f ? exp2f(ceilf(log2f(largest / 16384.0f))) : 1.0f;
          packed_scores(true, unscale, acc, bias);
        }
      }
      // Row g's bias sits in column 0: lane (g, 0).
      const float row_bias = __shfl_sync(0xffffffffu, bias[0], lane & ~3);
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        s[nt][0] = acc[nt][0] * unscale + row_bias;
        s[nt][1] = acc[nt][1] * unscale + row_bias;
      }
    } else {
      // Residual keys: slot p - kq; B column g is token p0 + 8 nt + g.
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const int p = p0 + 8 * nt + g;
        const T* key = key_res + int64_t{p - kq} * DIM;
#pragma unroll 4
        for (int kt = 0; kt < KT; ++kt) {
          const int d0 = 16 * kt + 2 * c;
          const uint32_t b0 = p < length ? load_pair(key + d0) : 0u;
          const uint32_t b1 = p < length ? load_pair(key + d0 + 8) : 0u;
          mma_rows8<T>(s[nt], q_frag[kt][0], q_frag[kt][1], b0, b1);
        }
      }
    }

    // ---- online softmax of row g over the tile
    float tile_max = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        s[nt][j] = p0 + 8 * nt + 2 * c + j < length ? s[nt][j] * score_scale : -INFINITY;
        tile_max = fmaxf(tile_max, s[nt][j]);
      }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
    const float m_new = fmaxf(m, tile_max);  // finite: token p0 is valid
    const float correction = exp2f(m - m_new);
    m = m_new;
    float p[4][2];
    l *= correction;
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        p[nt][j] = exp2f(s[nt][j] - m_new);
        l += p[nt][j];
      }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      o[nt][0] *= correction;
      o[nt][1] *= correction;
    }
    o_min[0] *= correction;
    o_min[1] *= correction;

    // ---- output: k-tile kt of the tile is tokens 16 kt + [0, 16); this lane's k rows are
    // tokens 16 kt + 2c + {0, 1} (fragment regs 0) and + {8, 9} (regs 1).
    const bool packed = p0 + kTile <= vq;  // every value of the tile is packed (in the stage)
    const T* stage_scale = reinterpret_cast<const T*>(stage + Stage::kValueScale);
    const T* stage_min = reinterpret_cast<const T*>(stage + Stage::kValueMin);
    const uint32_t* stage_codes = reinterpret_cast<const uint32_t*>(stage + Stage::kValueCodes);
#pragma unroll
    for (int kt = 0; kt < 2; ++kt) {
      int t[4];  // tile-local tokens of this lane's A/B rows
      t[0] = 16 * kt + 2 * c;
      t[1] = t[0] + 1;
      t[2] = t[0] + 8;
      t[3] = t[0] + 9;
      const uint32_t pa0 = pack_pair<T>(p[2 * kt][0], p[2 * kt][1]);
      const uint32_t pa2 = pack_pair<T>(p[2 * kt + 1][0], p[2 * kt + 1][1]);
      uint32_t a_scaled[kMostGroups][2];  // A = P * scale of 32-channel block j's group
      if (packed) {
#pragma unroll
        for (int j = 0; j < kMostGroups; ++j) {
          const int gr = j * 32 / group;
          a_scaled[j][0] = mul_pair<T>(pa0, pair_of(stage_scale + t[0] * v_groups + gr, stage_scale + t[1] * v_groups + gr));
          a_scaled[j][1] = mul_pair<T>(pa2, pair_of(stage_scale + t[2] * v_groups + gr, stage_scale + t[3] * v_groups + gr));
        }
        // The min term: B column g holds the minima of group g (zero past the groups).
        const bool has_group = g < v_groups;
        mma_rows8<T>(o_min, pa0, pa2,
                     has_group ? pair_of(stage_min + t[0] * v_groups + g, stage_min + t[1] * v_groups + g) : 0u,
                     has_group ? pair_of(stage_min + t[2] * v_groups + g, stage_min + t[3] * v_groups + g) : 0u);
        // B fragments of channels 8 nt + g for tokens (t0, t1) and (t2, t3), a 16-bit portion
        // of this lane's run of codes at a time.
        if constexpr (kValueChunkBits >= 32) {
          constexpr int kWords = kValueChunkBits / 32;
          uint32_t w[4][kWords];
#pragma unroll
          for (int i = 0; i < 4; ++i) shared_words<kWords>(stage_codes + t[i] * v_words + g * kWords, w[i]);
#pragma unroll
          for (int q = 0; q < 2 * kWords; ++q) {
            uint32_t lo[kValuePer], hi[kValuePer];
            unpack_halves<T, VB>(join_halves(w[0][q / 2], w[1][q / 2], q % 2), lo);
            unpack_halves<T, VB>(join_halves(w[2][q / 2], w[3][q / 2], q % 2), hi);
#pragma unroll
            for (int i = 0; i < kValuePer; ++i) {
              const int nt = q * kValuePer + i;
              mma_rows8<T>(o[nt], a_scaled[nt / 4][0], a_scaled[nt / 4][1], lo[i], hi[i]);
            }
          }
        } else {  // head_dim 64 at 2 bits: the run is one half of word g / 2
          const bool high = g % 2;
          uint32_t lo[kValuePer], hi[kValuePer];
          unpack_halves<T, VB>(join_halves(stage_codes[t[0] * v_words + g / 2], stage_codes[t[1] * v_words + g / 2], high), lo);
          unpack_halves<T, VB>(join_halves(stage_codes[t[2] * v_words + g / 2], stage_codes[t[3] * v_words + g / 2], high), hi);
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
            mma_rows8<T>(o[nt], a_scaled[nt / 4][0], a_scaled[nt / 4][1], lo[nt], hi[nt]);
        }
      } else {
        // General path, straight from global memory: per token the factor on P (its scale, 1
        // for a residual token, 0 past the end), its minima, and its values one by one.
        float pk[4] = {p[2 * kt][0], p[2 * kt][1], p[2 * kt + 1][0], p[2 * kt + 1][1]};
        float factor[4][kMostGroups], own_min[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int pos = p0 + t[i];
          const bool valid = pos < length, quantized = pos < vq;
#pragma unroll
          for (int j = 0; j < kMostGroups; ++j)
            factor[i][j] = !valid ? 0.0f : quantized ? to_float(value_scale[int64_t{pos} * v_groups + j * 32 / group]) : 1.0f;
          own_min[i] = valid && quantized && g < v_groups ? to_float(value_min[int64_t{pos} * v_groups + g]) : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < kMostGroups; ++j) {
          a_scaled[j][0] = pack_pair<T>(pk[0] * factor[0][j], pk[1] * factor[1][j]);
          a_scaled[j][1] = pack_pair<T>(pk[2] * factor[2][j], pk[3] * factor[3][j]);
        }
        mma_rows8<T>(o_min, pack_pair<T>(pk[0], pk[1]), pack_pair<T>(pk[2], pk[3]),
                     pack_pair<T>(own_min[0], own_min[1]), pack_pair<T>(own_min[2], own_min[3]));
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const int d = 8 * nt + g;
          float v[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int pos = p0 + t[i];
            v[i] = 0.0f;
            if (pos < length && pos < vq) {
              int word, bit;
              value_tile_slot(d, DIM, VB, word, bit);
              v[i] = static_cast<float>((__ldg(value_codes + int64_t{pos} * v_words + word) >> bit) & ((1u << VB) - 1u));
            } else if (pos < length) {
              v[i] = to_float(value_res[int64_t{pos % a.value_slots} * DIM + d]);
            }
          }
          mma_rows8<T>(o[nt], a_scaled[nt / 4][0], a_scaled[nt / 4][1], pack_pair<T>(v[0], v[1]),
                       pack_pair<T>(v[2], v[3]));
        }
      }
    }
    __syncwarp();  // the stage is refilled kStages - 1 tiles later
  }
  copy_async_wait<0>();

  // ---- merge: row g's sum over its quad; the min term moved to its channels; warps combined
  // (their accumulators go where the stages were).
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  __syncthreads();
  float* acc_s = reinterpret_cast<float*>(dynamic_smem) + warp * 8 * DIM;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    // o_min holds groups 2c, 2c + 1 of row g; channel 8 nt + 2c is in group 8 nt / group.
    const int gr = 8 * nt / group;
    const int source = (lane & ~3) | (gr >> 1);
    const float from0 = __shfl_sync(0xffffffffu, o_min[0], source);
    const float from1 = __shfl_sync(0xffffffffu, o_min[1], source);
    const float add = (gr & 1) ? from1 : from0;
    acc_s[g * DIM + 8 * nt + 2 * c] = o[nt][0] + add;
    acc_s[g * DIM + 8 * nt + 2 * c + 1] = o[nt][1] + add;
  }
  if (c == 0) {
    max_s[warp][g] = m;
    sum_s[warp][g] = l;
  }
  __syncthreads();

  const float* all_acc = reinterpret_cast<const float*>(dynamic_smem);
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
        out += all_acc[(w * 8 + r) * DIM + d] * weight;
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

// Resident blocks per multiprocessor of this instantiation (for choosing the splits).
template <class T, int DIM, int KB, int VB>
int decode_mma_occupancy() {
  constexpr int kBytes = MmaStage<DIM, KB, VB>::kBlockBytes;
  static const int blocks = [] {
    cudaFuncSetAttribute(decode_mma_kernel<T, DIM, KB, VB>,
                         cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes);
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
  static_assert(kBytes >= kDecodeWarps * 8 * DIM * 4, "the stages hold the warps' accumulators");
  (void)decode_mma_occupancy<T, DIM, KB, VB>();  // sets the shared-memory attribute once
  const dim3 grid(a.splits, a.kv_heads, a.rows);
  decode_mma_kernel<T, DIM, KB, VB><<<grid, kDecodeWarps * 32, kBytes, stream>>>(a, tiles_per_split);
}

#define KIVI_DECLARE_DECODE_MMA_BITS(T, DIM, KB)                                                  \
  extern template void launch_decode_mma<T, DIM, KB, 2>(const DecodeAttention&, int, cudaStream_t); \
  extern template void launch_decode_mma<T, DIM, KB, 4>(const DecodeAttention&, int, cudaStream_t); \
  extern template void launch_decode_mma<T, DIM, KB, 8>(const DecodeAttention&, int, cudaStream_t); \
  extern template int decode_mma_occupancy<T, DIM, KB, 2>();                                      \
  extern template int decode_mma_occupancy<T, DIM, KB, 4>();                                      \
  extern template int decode_mma_occupancy<T, DIM, KB, 8>();
#define KIVI_DECLARE_DECODE_MMA(T, DIM) \
  KIVI_DECLARE_DECODE_MMA_BITS(T, DIM, 2) KIVI_DECLARE_DECODE_MMA_BITS(T, DIM, 4) KIVI_DECLARE_DECODE_MMA_BITS(T, DIM, 8)
KIVI_DECLARE_DECODE_MMA(__half, 64)
KIVI_DECLARE_DECODE_MMA(__half, 128)
KIVI_DECLARE_DECODE_MMA(__nv_bfloat16, 64)
KIVI_DECLARE_DECODE_MMA(__nv_bfloat16, 128)

}  // namespace kivi::kivi_cache::cuda
