// The fused KIVI decode kernel on tensor cores (fp16 and bf16 storage).
//
// Same schedule as decode_attention.cuh (grid (splits, kv heads, rows), 4 warps, 32-token tiles,
// online softmax in base 2, warps merged in shared memory, splits combined by a second kernel),
// but the arithmetic runs as m16n8k16 MMAs with the GQA group's query heads as rows 0..7:
//   scores  S[r][t] = sum_d (q[r][d] * scale[g][d]) * code[d][t] + sum_d q[r][d] * min[g][d]:
//           A = q * scale (per key group, in registers), B = the codes themselves, which are
//           small integers and exact in fp16/bf16; the bias q . min is added after;
//   output  O[r][d] = sum_t (P[r][t] * scale[t][c]) * code[t][d] + sum_t P[r][t] * min[t][c]
//           for each value channel group c: A = P * scale (per group), B = the codes; the min
//           term is one more MMA whose B holds min[t][c] in column c.
// Residual keys and values enter as plain B operands (A = q, A = P). Two codes come out of a
// packed word per operation (dual_codes), so unpacking costs about two instructions per code
// and the dot products cost nothing on the CUDA cores. Each warp copies its next tile's packed
// codes, scales and minima into shared memory (cp.async) while it computes the current one, so
// the loads of a tile are in flight together instead of one dependent round trip after another.
#pragma once

#include "decode_attention.cuh"
#include "mma_fragments.cuh"

namespace kivi::kivi_cache::cuda {

// One warp's copy of one tile's packed data in shared memory (byte offsets): the key codes of
// the tile's 32 tokens per channel [D][KB words], the value codes [32][D * VB / 32 words], the
// key group's scale and min [D], the tokens' value scales and mins [32][D / group].
template <int DIM, int KB, int VB>
struct MmaStage {
  static constexpr int kGroups = DIM / 32;  // most value channel groups
  static constexpr int kKeyCodes = 0;
  static constexpr int kValueCodes = kKeyCodes + 4 * DIM * KB;
  static constexpr int kKeyScale = kValueCodes + 4 * DIM * VB;
  static constexpr int kKeyMin = kKeyScale + 2 * DIM;
  static constexpr int kValueScale = kKeyMin + 2 * DIM;
  static constexpr int kValueMin = kValueScale + 2 * kTile * kGroups;
  static constexpr int kBytes = kValueMin + 2 * kTile * kGroups;
  static constexpr int kBlockBytes = kDecodeWarps * 2 * kBytes;  // two stages per warp
};

template <class T, int DIM, int KB, int VB>
__global__ void __launch_bounds__(kDecodeWarps * 32, 3)
    decode_mma_kernel(DecodeAttention a, int tiles_per_split) {
  using Stage = MmaStage<DIM, KB, VB>;
  constexpr int KT = DIM / 16;                 // k-tiles over channels (scores)
  constexpr int NT = DIM / 8;                  // n-tiles over channels (output)
  constexpr int kMaxGroups = Stage::kGroups;   // value channel groups (group_size >= 32)
  const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int rep = a.q_heads / a.kv_heads;
  const int length = a.length[b], kq = a.key_quantized[b], vq = a.value_quantized[b];
  const int tiles = (length + kTile - 1) / kTile;
  const int tile_begin = split * tiles_per_split;
  const int tile_end = min(tiles, tile_begin + tiles_per_split);

  extern __shared__ __align__(16) unsigned char dynamic_smem[];  // per warp: two stages
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
  const int k_words = group * KB / 32, v_words = DIM * VB / 32;
  const T* key_scale = static_cast<const T*>(a.key_scale) + b * a.key_scale_stride[0] + h * a.key_scale_stride[1];
  const T* key_min = static_cast<const T*>(a.key_min) + b * a.key_scale_stride[0] + h * a.key_scale_stride[1];
  const uint32_t* key_codes = reinterpret_cast<const uint32_t*>(a.key_codes) + b * a.key_codes_stride[0] + h * a.key_codes_stride[1];
  const T* key_res = static_cast<const T*>(a.key_residual) + b * a.key_residual_stride[0] + h * a.key_residual_stride[1];
  const uint32_t* value_codes = reinterpret_cast<const uint32_t*>(a.value_codes) + b * a.value_codes_stride[0] + h * a.value_codes_stride[1];
  const T* value_scale = static_cast<const T*>(a.value_scale) + b * a.value_scale_stride[0] + h * a.value_scale_stride[1];
  const T* value_min = static_cast<const T*>(a.value_min) + b * a.value_scale_stride[0] + h * a.value_scale_stride[1];
  const T* value_res = static_cast<const T*>(a.value_residual) + b * a.value_residual_stride[0] + h * a.value_residual_stride[1];

  // Starts copying tile `tile`'s packed data (what is packed of it) into stage `st`.
  unsigned char* stages = dynamic_smem + warp * 2 * Stage::kBytes;
  auto issue = [&](int st, int tile) {
    unsigned char* dst = stages + st * Stage::kBytes;
    const int p0 = tile * kTile;
    if (tile < tile_end && p0 < kq) {
      const int gi = p0 / group, o_tok = p0 % group;
      const uint32_t* src = key_codes + int64_t{gi} * DIM * k_words + o_tok * KB / 32;
      if (k_words == KB) {  // group_size 32: the tile is the whole group, one contiguous block
        for (int i = lane; i < DIM * KB / 4; i += 32) copy_async16(dst + Stage::kKeyCodes + 16 * i, src + 4 * i);
      } else if constexpr (KB == 2) {
        for (int d = lane; d < DIM; d += 32) copy_async8(dst + Stage::kKeyCodes + 8 * d, src + d * k_words);
      } else {
        for (int i = lane; i < DIM * KB / 4; i += 32) {
          const int d = i / (KB / 4), part = i % (KB / 4);
          copy_async16(dst + Stage::kKeyCodes + 16 * i, src + d * k_words + 4 * part);
        }
      }
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
  float o[NT][2], o_min[2] = {0.0f, 0.0f};  // C fragments: row g, channels 8 nt + 2c + {0, 1}
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) o[nt][0] = o[nt][1] = 0.0f;

  int st = 0;
  issue(st, tile_begin + warp);
  for (int tile = tile_begin + warp; tile < tile_end; tile += kDecodeWarps) {
    issue(st ^ 1, tile + kDecodeWarps);  // the next tile's copy overlaps this tile's work
    copy_async_wait<1>();
    __syncwarp();
    const unsigned char* stage = stages + st * Stage::kBytes;
    const int p0 = tile * kTile;

    // ---- scores: s[nt] = row g, tokens p0 + 8 nt + 2c + {0, 1}
    float s[4][2] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}};
    if (p0 < kq) {
      const T* scale = reinterpret_cast<const T*>(stage + Stage::kKeyScale);
      const T* minimum = reinterpret_cast<const T*>(stage + Stage::kKeyMin);
      const uint32_t* codes = reinterpret_cast<const uint32_t*>(stage + Stage::kKeyCodes);
      // Scores of this packed tile: A = q * scale (divided by `unscale`), B = codes; the bias
      // q . min in float.
      auto packed_scores = [&](float unscale, float (&acc)[4][2], float& bias, float& largest) {
        const float rescale = 1.0f / unscale;
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) acc[nt][0] = acc[nt][1] = 0.0f;
        bias = 0.0f;
        largest = 0.0f;
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
          const int d0 = 16 * kt + 2 * c;
          const float2 s01 = pair_to_float2(*reinterpret_cast<const uint32_t*>(scale + d0), T{});
          const float2 s89 = pair_to_float2(*reinterpret_cast<const uint32_t*>(scale + d0 + 8), T{});
          const float2 m01 = pair_to_float2(*reinterpret_cast<const uint32_t*>(minimum + d0), T{});
          const float2 m89 = pair_to_float2(*reinterpret_cast<const uint32_t*>(minimum + d0 + 8), T{});
          const float2 q01 = pair_to_float2(q_frag[kt][0], T{}), q89 = pair_to_float2(q_frag[kt][1], T{});
          const float x0 = q01.x * s01.x, x1 = q01.y * s01.y, x8 = q89.x * s89.x, x9 = q89.y * s89.y;
          largest = fmaxf(largest, fmaxf(fmaxf(fabsf(x0), fabsf(x1)), fmaxf(fabsf(x8), fabsf(x9))));
          const uint32_t a0 = pack_pair<T>(x0 * rescale, x1 * rescale);
          const uint32_t a2 = pack_pair<T>(x8 * rescale, x9 * rescale);
          bias += q01.x * m01.x + q01.y * m01.y + q89.x * m89.x + q89.y * m89.y;
          // The tile's 32 codes of channels d0, d0 + 1, d0 + 8, d0 + 9 (KB words each).
          uint32_t w[4][KB];
          shared_words<KB>(codes + d0 * KB, w[0]);
          shared_words<KB>(codes + (d0 + 1) * KB, w[1]);
          shared_words<KB>(codes + (d0 + 8) * KB, w[2]);
          shared_words<KB>(codes + (d0 + 9) * KB, w[3]);
#pragma unroll
          for (int half = 0; half < 2; ++half) {  // tokens [16 half, 16 half + 16)
            const uint32_t y0 = dual_codes<KB>(w[0] + half * KB / 2, g);
            const uint32_t y1 = dual_codes<KB>(w[1] + half * KB / 2, g);
            const uint32_t y8 = dual_codes<KB>(w[2] + half * KB / 2, g);
            const uint32_t y9 = dual_codes<KB>(w[3] + half * KB / 2, g);
            // Low halves: token 16 half + g (n-tile 2 half); high: + 8 (n-tile 2 half + 1).
            mma_rows8<T>(acc[2 * half], a0, a2, codes_to_fragment<T, KB>(__byte_perm(y0, y1, 0x5410)),
                         codes_to_fragment<T, KB>(__byte_perm(y8, y9, 0x5410)));
            mma_rows8<T>(acc[2 * half + 1], a0, a2,
                         codes_to_fragment<T, KB>(__byte_perm(y0, y1, 0x7632)),
                         codes_to_fragment<T, KB>(__byte_perm(y8, y9, 0x7632)));
          }
        }
        bias += __shfl_xor_sync(0xffffffffu, bias, 1);
        bias += __shfl_xor_sync(0xffffffffu, bias, 2);
      };
      float acc[4][2], bias, largest, unscale = 1.0f;
      packed_scores(1.0f, acc, bias, largest);
      if constexpr (std::is_same_v<T, __half>) {
        // fp16 operands overflow past 65504: when a key group's range makes q * scale that
        // large (rare), the tile is redone with A scaled down by a power of two.
        if (__any_sync(0xffffffffu, largest > 16384.0f)) {
          largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, 1));
          largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, 2));
          unscale = largest > 16384.0f ? exp2f(ceilf(log2f(largest / 16384.0f))) : 1.0f;
          packed_scores(unscale, acc, bias, largest);
        }
      }
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        s[nt][0] = acc[nt][0] * unscale + bias;
        s[nt][1] = acc[nt][1] * unscale + bias;
      }
    } else {
      // Residual keys: slot p - kq; B column g is token p0 + 8 nt + g.
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const int p = p0 + 8 * nt + g;
        const T* k = key_res + int64_t{p - kq} * DIM;
#pragma unroll 4
        for (int kt = 0; kt < KT; ++kt) {
          const int d0 = 16 * kt + 2 * c;
          const uint32_t b0 = p < length ? load_pair(k + d0) : 0u;
          const uint32_t b1 = p < length ? load_pair(k + d0 + 8) : 0u;
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

    // ---- output: k-tile kt is tokens p0 + 16 kt + [0, 16); this lane's k rows are tokens
    // t[0..1] = 16 kt + 2c + {0, 1} (fragment regs 0) and t[2..3] = + 8 (regs 1).
    const bool packed = p0 + kTile <= vq;  // every value of the tile is packed (in the stage)
    const uint32_t* stage_codes = reinterpret_cast<const uint32_t*>(stage + Stage::kValueCodes);
    const T* stage_scale = reinterpret_cast<const T*>(stage + Stage::kValueScale);
    const T* stage_min = reinterpret_cast<const T*>(stage + Stage::kValueMin);
#pragma unroll
    for (int kt = 0; kt < 2; ++kt) {
      int t[4];  // tile-local token indices
      t[0] = 16 * kt + 2 * c;
      t[1] = t[0] + 1;
      t[2] = t[0] + 8;
      t[3] = t[0] + 9;
      const float pk[4] = {p[2 * kt][0], p[2 * kt][1], p[2 * kt + 1][0], p[2 * kt + 1][1]};
      // Per token and channel group: the factor on P (scale, 1 for a residual token, 0 past
      // the end) and the minimum (0 unless packed).
      float factor[4][kMaxGroups], minimum[4][kMaxGroups];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int pos = p0 + t[i];
        const bool valid = pos < length, quantized = pos < vq;
        if (packed && v_groups == kMaxGroups) {  // group_size 32: the token's groups in one load
#pragma unroll
          for (int gr = 0; gr < kMaxGroups; gr += 2) {
            const float2 sc = pair_to_float2(*reinterpret_cast<const uint32_t*>(stage_scale + t[i] * kMaxGroups + gr), T{});
            const float2 mn = pair_to_float2(*reinterpret_cast<const uint32_t*>(stage_min + t[i] * kMaxGroups + gr), T{});
            factor[i][gr] = sc.x;
            factor[i][gr + 1] = sc.y;
            minimum[i][gr] = mn.x;
            minimum[i][gr + 1] = mn.y;
          }
          continue;
        }
#pragma unroll
        for (int gr = 0; gr < kMaxGroups; ++gr) {
          const bool here = gr < v_groups;
          if (packed) {
            factor[i][gr] = here ? to_float(stage_scale[t[i] * v_groups + gr]) : 0.0f;
            minimum[i][gr] = here ? to_float(stage_min[t[i] * v_groups + gr]) : 0.0f;
          } else {
            const int64_t at = int64_t{pos} * v_groups + gr;
            factor[i][gr] = !valid || !here ? 0.0f : quantized ? to_float(value_scale[at]) : 1.0f;
            minimum[i][gr] = valid && quantized && here ? to_float(value_min[at]) : 0.0f;
          }
        }
      }
      uint32_t a_scaled[kMaxGroups][2];
#pragma unroll
      for (int gr = 0; gr < kMaxGroups; ++gr) {
        a_scaled[gr][0] = pack_pair<T>(pk[0] * factor[0][gr], pk[1] * factor[1][gr]);
        a_scaled[gr][1] = pack_pair<T>(pk[2] * factor[2][gr], pk[3] * factor[3][gr]);
      }
      // The min term: B column g holds min[t][g] (group g; zero past the groups).
      {
        auto min_of = [&](int i) {
          float v = 0.0f;
#pragma unroll
          for (int gr = 0; gr < kMaxGroups; ++gr) v = (gr == g) ? minimum[i][gr] : v;
          return v;
        };
        mma_rows8<T>(o_min, pack_pair<T>(pk[0], pk[1]), pack_pair<T>(pk[2], pk[3]),
                     pack_pair<T>(min_of(0), min_of(1)), pack_pair<T>(min_of(2), min_of(3)));
      }
#pragma unroll
      for (int mc = 0; mc < DIM / 16; ++mc) {  // channels [16 mc, 16 mc + 16): n-tiles 2mc, 2mc+1
        const int gr = 16 * mc / group;
        uint32_t lo[2], hi[2];  // B regs for n-tile 2mc (channel 16mc + g) and 2mc + 1 (+ 8)
        if (packed) {
          uint32_t e[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            uint32_t w[VB / 2];
            shared_words<VB / 2>(stage_codes + t[i] * v_words + mc * (VB / 2), w);
            e[i] = dual_codes<VB>(w, g);
          }
          lo[0] = codes_to_fragment<T, VB>(__byte_perm(e[0], e[1], 0x5410));
          lo[1] = codes_to_fragment<T, VB>(__byte_perm(e[2], e[3], 0x5410));
          hi[0] = codes_to_fragment<T, VB>(__byte_perm(e[0], e[1], 0x7632));
          hi[1] = codes_to_fragment<T, VB>(__byte_perm(e[2], e[3], 0x7632));
        } else {
          float v_lo[4], v_hi[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int pos = p0 + t[i];
            v_lo[i] = v_hi[i] = 0.0f;
            if (pos < length && pos < vq) {
              uint32_t w[VB / 2];
              load_words<VB / 2>(value_codes + int64_t{pos} * v_words + mc * (VB / 2), w);
              const uint32_t e = dual_codes<VB>(w, g);
              v_lo[i] = static_cast<float>(e & 0xFFFFu);
              v_hi[i] = static_cast<float>(e >> 16);
            } else if (pos < length) {
              const T* v = value_res + int64_t{pos % a.value_slots} * DIM + 16 * mc + g;
              v_lo[i] = to_float(v[0]);
              v_hi[i] = to_float(v[8]);
            }
          }
          lo[0] = pack_pair<T>(v_lo[0], v_lo[1]);
          lo[1] = pack_pair<T>(v_lo[2], v_lo[3]);
          hi[0] = pack_pair<T>(v_hi[0], v_hi[1]);
          hi[1] = pack_pair<T>(v_hi[2], v_hi[3]);
        }
        mma_rows8<T>(o[2 * mc], a_scaled[gr][0], a_scaled[gr][1], lo[0], lo[1]);
        mma_rows8<T>(o[2 * mc + 1], a_scaled[gr][0], a_scaled[gr][1], hi[0], hi[1]);
      }
    }
    __syncwarp();  // the stage is refilled two tiles later
    st ^= 1;
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

template <class T, int DIM, int KB, int VB>
void launch_decode_mma(const DecodeAttention& a, int tiles_per_split, cudaStream_t stream) {
  constexpr int kBytes = MmaStage<DIM, KB, VB>::kBlockBytes;
  static_assert(kBytes >= kDecodeWarps * 8 * DIM * 4, "the stages hold the warps' accumulators");
  static const cudaError_t configured = cudaFuncSetAttribute(
      decode_mma_kernel<T, DIM, KB, VB>, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes);
  (void)configured;  // a failure shows as a launch error
  const dim3 grid(a.splits, a.kv_heads, a.rows);
  decode_mma_kernel<T, DIM, KB, VB><<<grid, kDecodeWarps * 32, kBytes, stream>>>(a, tiles_per_split);
}

#define KIVI_DECLARE_DECODE_MMA_BITS(T, DIM, KB)                                                  \
  extern template void launch_decode_mma<T, DIM, KB, 2>(const DecodeAttention&, int, cudaStream_t); \
  extern template void launch_decode_mma<T, DIM, KB, 4>(const DecodeAttention&, int, cudaStream_t); \
  extern template void launch_decode_mma<T, DIM, KB, 8>(const DecodeAttention&, int, cudaStream_t);
#define KIVI_DECLARE_DECODE_MMA(T, DIM) \
  KIVI_DECLARE_DECODE_MMA_BITS(T, DIM, 2) KIVI_DECLARE_DECODE_MMA_BITS(T, DIM, 4) KIVI_DECLARE_DECODE_MMA_BITS(T, DIM, 8)
KIVI_DECLARE_DECODE_MMA(__half, 64)
KIVI_DECLARE_DECODE_MMA(__half, 128)
KIVI_DECLARE_DECODE_MMA(__nv_bfloat16, 64)
KIVI_DECLARE_DECODE_MMA(__nv_bfloat16, 128)

}  // namespace kivi::kivi_cache::cuda
