// The end of a tensor-core decode block: its warps' (and the tail's) softmax states merged per
// query head, then either the output itself (one split) or the block's partial result, and the
// last block of the (row, kv head) to finish combines every split's partial into the output.
// One kernel per call: no combine launch, whose dependent loads cost a fixed ~10 us.
#pragma once

#include <cstdint>

#include "decode_attention.cuh"

namespace kivi::kivi_cache::cuda {

// Phase timestamps of one block (DecodeAttention::timing, a profiling knob): slot i of the
// block's 8 gets the global timer in ns when its thread 0 passes phase i.
struct DecodeStamp {
  unsigned long long* slots = nullptr;
  __device__ DecodeStamp(const DecodeAttention& a, int b, int h, int split) {
    if (a.timing != nullptr) slots = a.timing + 8 * ((int64_t{b} * a.kv_heads + h) * a.splits + split);
  }
  __device__ __forceinline__ void operator()(int phase) const {
    if (slots != nullptr && threadIdx.x == 0) {
      unsigned long long now;
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
      slots[phase] = now;
    }
  }
};

// The combined output of query head rep row r, channel d, over splits [0, splits) of the
// workspace (written by other blocks: read through L2).
__device__ __forceinline__ float combine_partials(const DecodeWorkspace& ws, int64_t first,
                                                  int splits, int dim, int d, float m_all,
                                                  float total) {
  float out[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // four independent chains of loads
  int s = 0;
  for (; s + 4 <= splits; s += 4) {
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const float weight = exp2f(__ldcg(ws.max + first + s + u) - m_all);
      out[u] = fmaf(__ldcg(ws.acc + (first + s + u) * dim + d), weight, out[u]);
    }
  }
  for (; s < splits; ++s)
    out[0] = fmaf(__ldcg(ws.acc + (first + s) * dim + d), exp2f(__ldcg(ws.max + first + s) - m_all), out[0]);
  const float sum = (out[0] + out[1]) + (out[2] + out[3]);
  return total > 0.0f ? sum / total : 0.0f;  // an idle row (no visible token) outputs zeros
}

// max_s/sum_s [states][8] and acc_all [states][8][DIM]: the block's states per query head of
// the kv head h of row b (rows past rep unused).
template <class T, int DIM>
__device__ void merge_and_finish(const DecodeAttention& a, int b, int h, int rep, int split,
                                 int states, const float (*max_s)[8], const float (*sum_s)[8],
                                 const float* acc_all, const DecodeStamp& stamp) {
  T* out = static_cast<T*>(a.out);
  DecodeWorkspace ws(a.workspace, a.rows, a.q_heads, DIM, a.splits);
  for (int i = threadIdx.x; i < rep * DIM; i += blockDim.x) {
    const int r = i / DIM, d = i % DIM;
    float m_all = -INFINITY;
    for (int w = 0; w < states; ++w) m_all = fmaxf(m_all, max_s[w][r]);
    float total = 0.0f, acc = 0.0f;
    if (m_all != -INFINITY) {
      for (int w = 0; w < states; ++w) {
        const float weight = exp2f(max_s[w][r] - m_all);
        total += sum_s[w][r] * weight;
        acc += acc_all[(w * 8 + r) * DIM + d] * weight;
      }
    }
    const int64_t head = int64_t{b} * a.q_heads + h * rep + r;
    if (a.splits == 1) {
      out[head * DIM + d] = from_float<T>(total > 0.0f ? acc / total : 0.0f);
      continue;
    }
    const int64_t slot = head * a.splits + split;
    ws.acc[slot * DIM + d] = acc;
    if (d == 0) {
      ws.max[slot] = m_all;
      ws.sum[slot] = total;
    }
  }
  if (a.splits == 1) {
    stamp(4);
    return;
  }

  // Publish, then count the finished splits of (b, h); the last one combines.
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    int* counter = a.counters + b * a.kv_heads + h;
    last = atomicAdd(counter, 1) == a.splits - 1;
    if (last) *counter = 0;  // every split has arrived: ready for the next call (or graph replay)
  }
  __syncthreads();
  stamp(4);
  if (!last) return;
  __threadfence();
  // Per query head: the largest max and the weighted sum over the splits (warp w: rows w, w+4).
  __shared__ float m_all_s[8], total_s[8];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < rep; r += kDecodeWarps) {
    const int64_t first = (int64_t{b} * a.q_heads + h * rep + r) * a.splits;
    float m = -INFINITY;
    for (int s = lane; s < a.splits; s += 32) m = fmaxf(m, __ldcg(ws.max + first + s));
    m = warp_max(m);
    float total = 0.0f;
    if (m != -INFINITY)
      for (int s = lane; s < a.splits; s += 32)
        total += __ldcg(ws.sum + first + s) * exp2f(__ldcg(ws.max + first + s) - m);
    total = warp_sum(total);
    if (lane == 0) {
      m_all_s[r] = m;
      total_s[r] = total;
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < rep * DIM; i += blockDim.x) {
    const int r = i / DIM, d = i % DIM;
    const int64_t head = int64_t{b} * a.q_heads + h * rep + r;
    const float m = m_all_s[r];
    out[head * DIM + d] = from_float<T>(
        m == -INFINITY ? 0.0f : combine_partials(ws, head * a.splits, a.splits, DIM, d, m, total_s[r]));
  }
  stamp(5);
}

}  // namespace kivi::kivi_cache::cuda
