// The tail of a row for the tensor-core decode kernel: positions after its last tile packed
// on both sides (the residual windows and the tiles they straddle), attended on CUDA cores by a
// whole block and merged with the warps' states like one more warp (decode_attention_mma.cuh).
//
// 32 positions at a time: the block first stages the chunk's keys and values as floats in
// shared memory (dequantized where packed), every load of a thread issued before any is used,
// so a chunk costs about one memory round trip; then warp w scores the chunk for query heads w
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

// 8 consecutive T at p (16-byte aligned) as floats.
template <class T>
__device__ __forceinline__ void load8(const T* p, float (&out)[8]) {
  static_assert(sizeof(T) == 2, "fp16 or bf16 storage");
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int j = 0; j < 8; ++j) out[j] = to_float(e[j]);
}

// Key of position p, channels [d0, d0 + 8), as floats (dequantized if packed).
template <class T, int DIM>
__device__ __forceinline__ void tail_key8(const RowView<T>& row, int p, int d0, float (&k)[8]) {
  if (p >= row.kq) {
    load8(row.key_res + int64_t{p - row.kq} * DIM + d0, k);
    return;
  }
  const int gi = p >> row.group_log2, t = p & (row.group - 1);
  const uint32_t* block = row.key_codes + int64_t{gi} * DIM * (row.group * row.k_bits / 32);
  uint32_t words[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    int word, bit;
    key_tile_slot(d0 + j, t, DIM, row.k_bits, word, bit);
    words[j] = __ldg(block + word) >> bit;
  }
  float scale[8], minimum[8];
  load8(row.key_scale + int64_t{gi} * DIM + d0, scale);
  load8(row.key_min + int64_t{gi} * DIM + d0, minimum);
  const uint32_t mask = (1u << row.k_bits) - 1u;
#pragma unroll
  for (int j = 0; j < 8; ++j) k[j] = fmaf(static_cast<float>(words[j] & mask), scale[j], minimum[j]);
}

// Value of position p, channels [d0, d0 + 8) (one value group: group_size >= 32), as floats.
template <class T, int DIM>
__device__ __forceinline__ void tail_value8(const RowView<T>& row, int p, int d0, float (&v)[8]) {
  if (p >= row.vq) {
    load8(row.value_res + int64_t{p % row.value_slots} * DIM + d0, v);
    return;
  }
  const int v_words = DIM * row.v_bits / 32;
  const uint32_t* codes = row.value_codes + int64_t{p} * v_words;
  uint32_t words[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    int word, bit;
    value_tile_slot(d0 + j, DIM, row.v_bits, word, bit);
    words[j] = __ldg(codes + word) >> bit;
  }
  const int groups_log2 = __ffs(DIM) - 1 - row.group_log2;
  const int64_t at = (int64_t{p} << groups_log2) + (d0 >> row.group_log2);
  const float scale = to_float(row.value_scale[at]), minimum = to_float(row.value_min[at]);
  const uint32_t mask = (1u << row.v_bits) - 1u;
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] = fmaf(static_cast<float>(words[j] & mask), scale, minimum);
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
      const int j = tid / 4, part = tid % 4;
      float k[kVectorsPerThread][8], v[kVectorsPerThread][8];
#pragma unroll
      for (int i = 0; i < kVectorsPerThread; ++i) {
        if (j < n) {
          tail_key8<T, DIM>(row, c0 + j, 8 * (part + 4 * i), k[i]);
          tail_value8<T, DIM>(row, c0 + j, 8 * (part + 4 * i), v[i]);
        } else {
#pragma unroll
          for (int e = 0; e < 8; ++e) k[i][e] = v[i][e] = 0.0f;
        }
      }
#pragma unroll
      for (int i = 0; i < kVectorsPerThread; ++i) {
        const int d0 = 8 * (part + 4 * i);
        float4* kd = reinterpret_cast<float4*>(keys_s + j * S::kKeyStride + d0);
        float4* vd = reinterpret_cast<float4*>(values_s + j * DIM + d0);
        kd[0] = make_float4(k[i][0], k[i][1], k[i][2], k[i][3]);
        kd[1] = make_float4(k[i][4], k[i][5], k[i][6], k[i][7]);
        vd[0] = make_float4(v[i][0], v[i][1], v[i][2], v[i][3]);
        vd[1] = make_float4(v[i][4], v[i][5], v[i][6], v[i][7]);
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
