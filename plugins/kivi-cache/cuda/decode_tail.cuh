// The tail of a row for the tensor-core decode kernel: positions after its last tile packed
// on both sides (the residual windows and the tiles they straddle), attended on CUDA cores by a
// whole block and merged with the warps' states like one more warp (decode_attention_mma.cuh).
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

// Attention of the block's query heads (q_s rows 0..rep-1) over positions [begin, end) on CUDA
// cores, 128 positions at a time with an online softmax. Loads come in unrolled batches with no
// branch between them (residual and packed positions are separate loops), so a chunk costs a
// few memory round trips rather than one per channel or position. Leaves the (max, sum) per row
// in max_out/sum_out and the unnormalized output [8][DIM] in acc_out (rows past rep: -inf, 0).
template <class T, int DIM>
__device__ void decode_tail(const RowView<T>& row, int rep, float score_scale, const T (*q_s)[DIM],
                            int begin, int end, float* scores_s /* [8][128] */, float* max_out,
                            float* sum_out, float* acc_out) {
  constexpr int kChunk = kDecodeWarps * 32;
  constexpr int kRowsPerThread = 8 * DIM / kChunk;  // (row, channel) pairs a thread accumulates
  constexpr int kBatch = 16;                        // channels or positions per load batch
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  __shared__ float chunk_max[8], chunk_scale[8], warp_part[kDecodeWarps][8];
  float acc[kRowsPerThread];
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) acc[i] = 0.0f;
  float m_run = -INFINITY, l_run = 0.0f;  // thread r < 8 keeps row r's running max and sum
  for (int c0 = begin; c0 < end; c0 += kChunk) {
    const int p = c0 + tid;
    // Scores of position p for every query head (scaled, base 2).
    float s[8];
#pragma unroll
    for (int r = 0; r < 8; ++r) s[r] = 0.0f;
    if (p < end) {
      for (int d0 = 0; d0 < DIM; d0 += kBatch) {
        float k[kBatch];
        if (p >= row.kq) {  // residual: 16-byte loads
          const uint4* src = reinterpret_cast<const uint4*>(row.key_res + int64_t{p - row.kq} * DIM + d0);
#pragma unroll
          for (int v = 0; v < kBatch * 2 / 16; ++v) {
            const uint4 raw = __ldg(src + v);
            const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
            for (int j = 0; j < 8; ++j) k[8 * v + j] = to_float(e[j]);
          }
        } else {  // packed: every code, scale and min of the batch loaded before any use
          const int gi = p >> row.group_log2, t = p & (row.group - 1);
          const uint32_t* block = row.key_codes + int64_t{gi} * DIM * (row.group * row.k_bits / 32);
          uint32_t words[kBatch];
          T scale[kBatch], minimum[kBatch];
#pragma unroll
          for (int j = 0; j < kBatch; ++j) {
            int word, bit;
            key_tile_slot(d0 + j, t, DIM, row.k_bits, word, bit);
            words[j] = __ldg(block + word) >> bit;
            scale[j] = row.key_scale[int64_t{gi} * DIM + d0 + j];
            minimum[j] = row.key_min[int64_t{gi} * DIM + d0 + j];
          }
          const uint32_t mask = (1u << row.k_bits) - 1u;
#pragma unroll
          for (int j = 0; j < kBatch; ++j)
            k[j] = fmaf(static_cast<float>(words[j] & mask), to_float(scale[j]), to_float(minimum[j]));
        }
#pragma unroll
        for (int j = 0; j < kBatch; ++j)
#pragma unroll
          for (int r = 0; r < 8; ++r) s[r] = fmaf(to_float(q_s[r][d0 + j]), k[j], s[r]);
      }
    }
#pragma unroll
    for (int r = 0; r < 8; ++r) {
      s[r] = p < end && r < rep ? s[r] * score_scale : -INFINITY;
      scores_s[r * kChunk + tid] = s[r];
      const float w = warp_max(s[r]);
      if (lane == 0) warp_part[warp][r] = w;
    }
    __syncthreads();
    if (tid < 8) {
      float mx = -INFINITY;
#pragma unroll
      for (int w = 0; w < kDecodeWarps; ++w) mx = fmaxf(mx, warp_part[w][tid]);
      const float m_new = fmaxf(m_run, mx);
      chunk_scale[tid] = m_new == -INFINITY ? 1.0f : exp2f(m_run - m_new);
      chunk_max[tid] = m_new;
      m_run = m_new;
    }
    __syncthreads();
    // Probabilities in place, and their sums per row.
#pragma unroll
    for (int r = 0; r < 8; ++r) {
      const float x = scores_s[r * kChunk + tid];
      const float prob = x == -INFINITY ? 0.0f : exp2f(x - chunk_max[r]);
      scores_s[r * kChunk + tid] = prob;
      const float w = warp_sum(prob);
      if (lane == 0) warp_part[warp][r] = w;
    }
    __syncthreads();
    if (tid < 8) {
      float sum = 0.0f;
#pragma unroll
      for (int w = 0; w < kDecodeWarps; ++w) sum += warp_part[w][tid];
      l_run = l_run * chunk_scale[tid] + sum;
    }
    // Output: thread takes channel d = tid % DIM of rows tid / DIM + i * (kChunk / DIM).
    const int d = tid % DIM, r0 = tid / DIM;
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) acc[i] *= chunk_scale[r0 + i * (kChunk / DIM)];
    const int chunk_end = min(c0 + kChunk, end);
    auto accumulate = [&](int t0, const float (&v)[kBatch], int count) {
#pragma unroll
      for (int j = 0; j < kBatch; ++j)
        if (j < count)
#pragma unroll
          for (int i = 0; i < kRowsPerThread; ++i)
            acc[i] = fmaf(scores_s[(r0 + i * (kChunk / DIM)) * kChunk + t0 - c0 + j], v[j], acc[i]);
    };
    // Packed values, then residual ones: each batch's loads first.
    const int packed_end = max(c0, min(chunk_end, row.vq));
    int word, bit;
    value_tile_slot(d, DIM, row.v_bits, word, bit);
    const int groups_log2 = __ffs(DIM) - 1 - row.group_log2, v_words = DIM * row.v_bits / 32;
    const uint32_t v_mask = (1u << row.v_bits) - 1u;
    for (int t0 = c0; t0 < packed_end; t0 += kBatch) {
      const int count = min(kBatch, packed_end - t0);
      uint32_t codes[kBatch];
      T scale[kBatch], minimum[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        const int pos = min(t0 + j, packed_end - 1);
        const int64_t at = (int64_t{pos} << groups_log2) + (d >> row.group_log2);
        codes[j] = __ldg(row.value_codes + int64_t{pos} * v_words + word) >> bit;
        scale[j] = row.value_scale[at];
        minimum[j] = row.value_min[at];
      }
      float v[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j)
        v[j] = fmaf(static_cast<float>(codes[j] & v_mask), to_float(scale[j]), to_float(minimum[j]));
      accumulate(t0, v, count);
    }
    for (int t0 = packed_end; t0 < chunk_end; t0 += kBatch) {
      const int count = min(kBatch, chunk_end - t0);
      T raw[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j)
        raw[j] = row.value_res[int64_t{min(t0 + j, chunk_end - 1) % row.value_slots} * DIM + d];
      float v[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j) v[j] = to_float(raw[j]);
      accumulate(t0, v, count);
    }
    __syncthreads();  // scores_s and the chunk's shared values are rewritten next
  }
  const int d = tid % DIM, r0 = tid / DIM;
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) acc_out[(r0 + i * (kChunk / DIM)) * DIM + d] = acc[i];
  if (tid < 8) {
    max_out[tid] = m_run;
    sum_out[tid] = l_run;
  }
}

}  // namespace kivi::kivi_cache::cuda
