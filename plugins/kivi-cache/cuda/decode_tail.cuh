// The tail of a row for the tensor-core decode kernel: positions after its last tile packed
// on both sides (the residual windows and the tiles they straddle), attended on CUDA cores by a
// whole block and merged with the warps' states like one more warp (decode_attention_mma.cuh).
//
// 32 positions at a time: the block first stages the chunk's keys and values as floats in
// shared memory (dequantized where packed), every load of a thread issued before any result is
// used, so a chunk costs one memory round trip; then warp w scores the chunk for query heads w
// and w + 4 (lane = position) with an online softmax, and each thread accumulates the output of
// one channel.
#pragma once

#include <cstdint>

#include "decode_attention.cuh"
#include "tile_slots.cuh"

namespace kivi::kivi_cache::cuda {

// Where a row's data lives, for the tail.
template <class T>
struct RowView {
  const uint32_t* key_codes;
  const T *key_scale, *key_min, *key_res;
  const uint32_t* value_codes;
  const T *value_scale, *value_min, *value_res;
  int length, kq, vq, group, group_log2, k_bits, v_bits, value_slots;
};

// Floats of shared memory decode_tail works in (for head_dim DIM).
template <int DIM>
struct TailScratch {
  static constexpr int kKeyStride = DIM + 4;  // float4-aligned rows, conflict-free float4 reads
  static constexpr int kKeys = 0;                              // [32][kKeyStride]
  static constexpr int kValues = kKeys + kTile * kKeyStride;   // [32][DIM]
  static constexpr int kQueries = kValues + kTile * DIM;       // [8][DIM]
  static constexpr int kProbs = kQueries + 8 * DIM;            // [8][32]
  static constexpr int kCorrection = kProbs + 8 * kTile;       // [8]
  static constexpr int kFloats = kCorrection + 8;
};

// 8 consecutive T (one 16-byte word) as floats.
template <class T>
__device__ __forceinline__ void to_floats8(const uint4& raw, float (&out)[8]) {
  static_assert(sizeof(T) == 2, "fp16 or bf16 storage");
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int j = 0; j < 8; ++j) out[j] = to_float(e[j]);
}

// One position's keys or values, channels [8 (part + 4 i), + 8) for i < N, as they are stored:
// every load is issued before any result is used (a warp stalls at the first use of a pending
// load, so a load after a use costs one more memory round trip).
template <int N>
struct TailRaw {
  uint32_t words[N][8];    // packed: each channel's code word, shifted to bit 0
  uint4 scale[N], min[N];  // keys: 8 channels' scale and min; values: .x holds the group's;
                           // residual: scale holds the row's 8 channels
};

template <class T, int DIM, int N>
__device__ __forceinline__ void load_tail_keys(const RowView<T>& row, int p, int part, TailRaw<N>& raw) {
  if (p >= row.kq) {
#pragma unroll
    for (int i = 0; i < N; ++i)
      raw.scale[i] = __ldg(reinterpret_cast<const uint4*>(row.key_res + int64_t{p - row.kq} * DIM + 8 * (part + 4 * i)));
    return;
  }
  const int gi = p >> row.group_log2, t = p & (row.group - 1);
  const uint32_t* block = row.key_codes + int64_t{gi} * DIM * (row.group * row.k_bits / 32);
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int d0 = 8 * (part + 4 * i);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      int word, bit;
      key_tile_slot(d0 + j, t, DIM, row.k_bits, word, bit);
      raw.words[i][j] = __ldg(block + word) >> bit;
    }
    raw.scale[i] = __ldg(reinterpret_cast<const uint4*>(row.key_scale + int64_t{gi} * DIM + d0));
    raw.min[i] = __ldg(reinterpret_cast<const uint4*>(row.key_min + int64_t{gi} * DIM + d0));
  }
}

template <class T, int DIM, int N>
__device__ __forceinline__ void load_tail_values(const RowView<T>& row, int p, int part, TailRaw<N>& raw) {
  if (p >= row.vq) {
#pragma unroll
    for (int i = 0; i < N; ++i)
      raw.scale[i] = __ldg(reinterpret_cast<const uint4*>(row.value_res + int64_t{p % row.value_slots} * DIM + 8 * (part + 4 * i)));
    return;
  }
  const uint32_t* codes = row.value_codes + int64_t{p} * (DIM * row.v_bits / 32);
  const int groups_log2 = __ffs(DIM) - 1 - row.group_log2;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int d0 = 8 * (part + 4 * i);  // 8 channels of one value group (group_size >= 32)
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      int word, bit;
      value_tile_slot(d0 + j, DIM, row.v_bits, word, bit);
      raw.words[i][j] = __ldg(codes + word) >> bit;
    }
    const int64_t at = (int64_t{p} << groups_log2) + (d0 >> row.group_log2);
    raw.scale[i].x = *reinterpret_cast<const uint16_t*>(row.value_scale + at);
    raw.min[i].x = *reinterpret_cast<const uint16_t*>(row.value_min + at);
  }
}

// The loaded channels as floats (dequantized where packed).
template <class T, int N>
__device__ __forceinline__ void tail_floats(const TailRaw<N>& raw, bool residual, bool per_channel,
                                            int bits, float (&out)[N][8]) {
  const uint32_t mask = (1u << bits) - 1u;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    if (residual) {
      to_floats8<T>(raw.scale[i], out[i]);
      continue;
    }
    float scale[8], minimum[8];
    if (per_channel) {
      to_floats8<T>(raw.scale[i], scale);
      to_floats8<T>(raw.min[i], minimum);
    } else {
      const uint16_t s16 = static_cast<uint16_t>(raw.scale[i].x), m16 = static_cast<uint16_t>(raw.min[i].x);
      const float s = to_float(*reinterpret_cast<const T*>(&s16)), m = to_float(*reinterpret_cast<const T*>(&m16));
#pragma unroll
      for (int j = 0; j < 8; ++j) scale[j] = s, minimum[j] = m;
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) out[i][j] = fmaf(static_cast<float>(raw.words[i][j] & mask), scale[j], minimum[j]);
  }
}

// A thread's channels of one staged row (zeros for a position past the chunk: its probability
// is 0, and 0 * garbage could be NaN).
template <int N>
__device__ __forceinline__ void store_tail_row(const float (&x)[N][8], bool valid, int part, float* row_s) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    float4* dst = reinterpret_cast<float4*>(row_s + 8 * (part + 4 * i));
    dst[0] = valid ? make_float4(x[i][0], x[i][1], x[i][2], x[i][3]) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    dst[1] = valid ? make_float4(x[i][4], x[i][5], x[i][6], x[i][7]) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
}

// Attention of the block's query heads (q_s rows 0..rep-1) over positions [begin, end) on CUDA
// cores. `scratch` holds TailScratch<DIM>::kFloats floats and may overlap acc_out, which is
// written only after the last use of the scratch. Leaves the (max, sum) per row in
// max_out/sum_out and the unnormalized output [8][DIM] in acc_out (rows past rep: -inf, 0).
template <class T, int DIM>
__device__ void decode_tail(const RowView<T>& row, int rep, float score_scale, const T (*q_s)[DIM],
                            int begin, int end, float* scratch, float* max_out, float* sum_out,
                            float* acc_out) {
  using S = TailScratch<DIM>;
  constexpr int kThreads = kDecodeWarps * 32;
  static_assert(kDecodeWarps == 4 && DIM % 32 == 0, "4 warps score 8 query heads, 2 each");
  constexpr int kVectorsPerThread = DIM / 32;       // 8-channel vectors of one position, of 4 threads
  constexpr int kPass = 2;                          // vectors loaded per round trip
  constexpr int kRowsPerThread = 8 * DIM / kThreads;  // output (row, channel) pairs per thread
  constexpr int kRowStep = kThreads / DIM;
  float* keys_s = scratch + S::kKeys;
  float* values_s = scratch + S::kValues;
  float* queries_s = scratch + S::kQueries;
  float* probs_s = scratch + S::kProbs;
  float* correction_s = scratch + S::kCorrection;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  for (int i = tid; i < 8 * DIM; i += kThreads) queries_s[i] = to_float(q_s[i / DIM][i % DIM]);

  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};  // rows warp, warp + 4
  const int d = tid % DIM, r0 = tid / DIM;                             // output: channel d
  float acc[kRowsPerThread];
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) acc[i] = 0.0f;

  for (int c0 = begin; c0 < end; c0 += kTile) {
    const int n = min(kTile, end - c0);
    // ---- stage: thread (j, part) takes position c0 + j, channel vectors part + 4 i; rows past
    // n are zeros (their probabilities are 0, and 0 * garbage could be NaN).
    {
      // Keys, then values, kPass vectors at a time: a few round trips, as holding every raw
      // word of both sides at once would spill.
      const int j = tid / 4, part = tid % 4, p = c0 + j;
#pragma unroll
      for (int pass = 0; pass < kVectorsPerThread / kPass; ++pass) {
        const int first = part + 4 * kPass * pass;  // the pass's first vector (then + 4, ...)
        float x[kPass][8];
        TailRaw<kPass> raw;
        if (j < n) load_tail_keys<T, DIM>(row, p, first, raw);
        tail_floats<T>(raw, p >= row.kq, true, row.k_bits, x);
        store_tail_row<kPass>(x, j < n, first, keys_s + j * S::kKeyStride);
        if (j < n) load_tail_values<T, DIM>(row, p, first, raw);
        tail_floats<T>(raw, p >= row.vq, false, row.v_bits, x);
        store_tail_row<kPass>(x, j < n, first, values_s + j * DIM);
      }
    }
    __syncthreads();
    // ---- scores and online softmax: warp w takes rows w and w + 4, lane = position
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = warp + 4 * i;
      float s = -INFINITY;
      if (r < rep && lane < n) {
        float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        const float4* kr = reinterpret_cast<const float4*>(keys_s + lane * S::kKeyStride);
        const float4* qr = reinterpret_cast<const float4*>(queries_s + r * DIM);
#pragma unroll 8
        for (int x = 0; x < DIM / 4; ++x) {
          const float4 kk = kr[x], qq = qr[x];
          part[0] = fmaf(qq.x, kk.x, part[0]);
          part[1] = fmaf(qq.y, kk.y, part[1]);
          part[2] = fmaf(qq.z, kk.z, part[2]);
          part[3] = fmaf(qq.w, kk.w, part[3]);
        }
        s = ((part[0] + part[1]) + (part[2] + part[3])) * score_scale;
      }
      const float m_new = fmaxf(m_run[i], warp_max(s));
      const float correction = m_new == -INFINITY ? 1.0f : exp2f(m_run[i] - m_new);
      const float prob = s == -INFINITY ? 0.0f : exp2f(s - m_new);
      l_run[i] = l_run[i] * correction + warp_sum(prob);
      m_run[i] = m_new;
      probs_s[r * kTile + lane] = prob;
      if (lane == 0) correction_s[r] = correction;
    }
    __syncthreads();
    // ---- output: channel d of rows r0 + i * kRowStep
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) acc[i] *= correction_s[r0 + i * kRowStep];
#pragma unroll 8
    for (int j = 0; j < kTile; ++j) {
      const float v = values_s[j * DIM + d];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) acc[i] = fmaf(probs_s[(r0 + i * kRowStep) * kTile + j], v, acc[i]);
    }
    __syncthreads();  // the next chunk restages the scratch
  }
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) acc_out[(r0 + i * kRowStep) * DIM + d] = acc[i];
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      max_out[warp + 4 * i] = m_run[i];
      sum_out[warp + 4 * i] = l_run[i];
    }
  }
}

}  // namespace kivi::kivi_cache::cuda
