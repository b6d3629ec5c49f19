// The end of a tensor-core decode block: its warps' softmax states merged per query head, then
// either the output itself (one split) or the block's partial result, and the last block of the
// (row, kv head) to finish combines every split's partial into the output.
// One kernel per call: no combine launch, whose dependent loads cost a fixed ~10 us.
#pragma once

#include <cooperative_groups.h>

#include <cstdint>

#include "decode_attention.cuh"

namespace kivi::kivi_cache::cuda {

// Phase timestamps of one block (DecodeAttention::timing, a profiling knob): slot i of the
// block's 8 gets the global timer in ns when its thread 0 passes phase i.
struct DecodeStamp {
  unsigned long long* slots = nullptr;
  __device__ DecodeStamp(const DecodeAttention& a, int b, int h, int split) {
    if (a.timing != nullptr)
      slots = a.timing + 8 * ((int64_t{b} * a.kv_heads + h) * a.splits + split);
  }
  __device__ __forceinline__ void operator()(int phase) const {
    if (slots != nullptr && threadIdx.x == 0) {
      unsigned long long now;
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
      slots[phase] = now;
    }
  }
};

// The output of one query head's channel d: the splits' partials (written by other blocks: read
// through L2) weighted by weights_s[s] / total. Eight loads in flight at a time.
__device__ __forceinline__ float combine_partials(const float* acc, int splits, int dim, int d,
                                                  const float* weights_s, float total) {
  float out[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  int s = 0;
  for (; s + 8 <= splits; s += 8) {
    float x[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) x[u] = __ldcg(acc + int64_t{s + u} * dim + d);
#pragma unroll
    for (int u = 0; u < 8; ++u) out[u % 4] = fmaf(x[u], weights_s[s + u], out[u % 4]);
  }
  for (; s < splits; ++s) out[0] = fmaf(__ldcg(acc + int64_t{s} * dim + d), weights_s[s], out[0]);
  const float sum = (out[0] + out[1]) + (out[2] + out[3]);
  return total > 0.0f ? sum / total : 0.0f;  // an idle row (no visible token) outputs zeros
}

// One output element from the states of n <= N splits: their maxima m (base 2), sums l and
// accumulators x. An idle row (no visible token) gives 0, as the other backends do.
template <int N>
__device__ __forceinline__ float combine_states(const float (&m)[N], const float (&l)[N],
                                                const float (&x)[N], int n) {
  float largest = -INFINITY;
#pragma unroll
  for (int s = 0; s < N; ++s)
    if (s < n) largest = fmaxf(largest, m[s]);
  float total = 0.0f, sum = 0.0f;
  if (largest != -INFINITY) {
#pragma unroll
    for (int s = 0; s < N; ++s)
      if (s < n) {
        const float weight = exp2f(m[s] - largest);
        total += l[s] * weight;
        sum += x[s] * weight;
      }
  }
  return total > 0.0f ? sum / total : 0.0f;
}

// Where a block whose splits form a cluster keeps its merged state in its shared memory (after
// the warps' accumulators): acc [8][DIM], then max [8] at 8 * DIM and sum [8] at 9 * DIM.
template <int DIM>
inline constexpr int kClusterStateOffset = kDecodeWarps * 8 * DIM;
template <int DIM>
inline constexpr int kClusterStateFloats = 10 * DIM;

// The splits of (row b, kv head h) as one thread-block cluster (DecodeAttention::cluster_splits,
// sm_90): every block's merged state is in its own shared memory (`state`), the cluster barrier
// publishes them, and each split then writes its share of the output (elements split,
// split + splits, ... of the block-sized slices), reading every split's state through
// distributed shared memory with all of its loads in flight at once (one round trip; split 0
// alone, one output element per round trip, took ~1.2 us at batch 16 x 4K). The blocks wait for
// each other before they leave (their shared memory must stay until read). No workspace round
// trip through L2, no counter.
template <class T, int DIM>
__device__ void combine_in_cluster(const DecodeAttention& a, int b, int h, int rep, int split,
                                   float* state, const DecodeStamp& stamp) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  stamp(3);
  cluster.sync();  // every split's state is written and visible
  stamp(4);
  // A thread's elements: at most 8 heads x DIM over (at least 2 splits x the block's threads).
  constexpr int kThreads = kDecodeWarps * 32;
  constexpr int kPer = (8 * DIM + 2 * kThreads - 1) / (2 * kThreads);
  const float* states[kClusterSplits];
#pragma unroll
  for (int s = 0; s < kClusterSplits; ++s)
    states[s] = s < a.splits ? cluster.map_shared_rank(state, s) : state;
  float m[kPer][kClusterSplits], l[kPer][kClusterSplits], x[kPer][kClusterSplits];
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int i = (k * a.splits + split) * kThreads + threadIdx.x, r = i / DIM, d = i % DIM;
    if (i < rep * DIM)
#pragma unroll
      for (int s = 0; s < kClusterSplits; ++s)
        if (s < a.splits) {
          m[k][s] = states[s][8 * DIM + r];
          l[k][s] = states[s][9 * DIM + r];
          x[k][s] = states[s][r * DIM + d];
        }
  }
  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int i = (k * a.splits + split) * kThreads + threadIdx.x, r = i / DIM, d = i % DIM;
    if (i < rep * DIM) {
      const int64_t head = int64_t{b} * a.q_heads + h * rep + r;
      out[head * DIM + d] = from_float<T>(combine_states(m[k], l[k], x[k], a.splits));
    }
  }
  stamp(5);
  cluster.sync();  // every split has read every block's state
#endif
}

// Up to this many splits, the last block loads every split's state at once.
inline constexpr int kFewSplits = 8;

// max_s/sum_s [kDecodeWarps][8] and acc_all [kDecodeWarps][8][DIM]: the block's warps' states
// per query head of the kv head h of row b (rows past rep unused).
template <class T, int DIM>
__device__ void merge_and_finish(const DecodeAttention& a, int b, int h, int rep, int split,
                                 const float (*max_s)[8], const float (*sum_s)[8], float* acc_all,
                                 const DecodeStamp& stamp) {
  static_assert(kDecodeWarps == 4, "warp 0's lanes are (head, warp) pairs");
  constexpr int kThreads = kDecodeWarps * 32, kPer = 8 * DIM / kThreads;
  // Per query head, once: each warp's weight exp2(max - largest), the merged max and sum (lane
  // 4r + w of warp 0 holds head r, warp w), instead of in every thread for each of its outputs.
  __shared__ float weight_s[8][kDecodeWarps], max_all_s[8], total_s[8];
  if (threadIdx.x < 32) {
    const int r = threadIdx.x / 4, w = threadIdx.x % 4;
    const float m = max_s[w][r];
    float m_all = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
    m_all = fmaxf(m_all, __shfl_xor_sync(0xffffffffu, m_all, 2));
    const float weight = m_all == -INFINITY ? 0.0f : exp2f(m - m_all);
    float total = sum_s[w][r] * weight;
    total += __shfl_xor_sync(0xffffffffu, total, 1);
    total += __shfl_xor_sync(0xffffffffu, total, 2);
    weight_s[r][w] = weight;
    if (w == 0) {
      max_all_s[r] = m_all;
      total_s[r] = total;
    }
  }
  __syncthreads();
  T* out = static_cast<T*>(a.out);
  DecodeWorkspace ws(a.workspace, a.rows, a.q_heads, DIM, a.splits);
  float* state = acc_all + kClusterStateOffset<DIM>;  // (cluster_splits: stays in shared memory)
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int i = k * kThreads + threadIdx.x, r = i / DIM, d = i % DIM;
    if (i >= rep * DIM) break;
    float acc = 0.0f;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) acc += acc_all[(w * 8 + r) * DIM + d] * weight_s[r][w];
    const float total = total_s[r];
    const int64_t head = int64_t{b} * a.q_heads + h * rep + r;
    if (a.splits == 1) {
      out[head * DIM + d] = from_float<T>(total > 0.0f ? acc / total : 0.0f);
    } else if (a.cluster_splits) {
      state[r * DIM + d] = acc;
      if (d == 0) {
        state[8 * DIM + r] = max_all_s[r];
        state[9 * DIM + r] = total;
      }
    } else {
      const int64_t slot = head * a.splits + split;
      ws.acc[slot * DIM + d] = acc;
      if (d == 0) {
        ws.max[slot] = max_all_s[r];
        ws.sum[slot] = total;
      }
    }
  }
  if (a.splits == 1) {
    stamp(4);
    return;
  }
  if (a.cluster_splits) {
    combine_in_cluster<T, DIM>(a, b, h, rep, split, acc_all + kClusterStateOffset<DIM>, stamp);
    return;
  }

  // Publish, then count the finished splits of (b, h); the last one combines. (Barrier, then
  // one thread's acquire-release atomic at gpu scope: the barrier makes the block's partials
  // part of what it releases, and the last block acquires every other block's. One round trip,
  // where a fence, the atomic and a fence took three.)
  __shared__ bool last;
  __syncthreads();
  if (threadIdx.x == 0) {
    int* counter = a.counters + b * a.kv_heads + h;
    int before;
    asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], 1;"
                 : "=r"(before)
                 : "l"(counter)
                 : "memory");
    last = before == a.splits - 1;
    // every split has arrived: ready for the next call (or graph replay)
    if (last) *counter = 0;
  }
  __syncthreads();
  stamp(4);
  if (!last) return;
  if (a.splits <= kFewSplits) {  // every thread loads all it needs at once: one round trip
    for (int i = threadIdx.x; i < rep * DIM; i += blockDim.x) {
      const int r = i / DIM, d = i % DIM;
      const int64_t head = int64_t{b} * a.q_heads + h * rep + r;
      float m[kFewSplits], l[kFewSplits], x[kFewSplits];
#pragma unroll
      for (int s = 0; s < kFewSplits; ++s)
        if (s < a.splits) {
          m[s] = __ldcg(ws.max + head * a.splits + s);
          l[s] = __ldcg(ws.sum + head * a.splits + s);
          x[s] = __ldcg(ws.acc + (head * a.splits + s) * DIM + d);
        }
      out[head * DIM + d] = from_float<T>(combine_states(m, l, x, a.splits));
    }
    stamp(5);
    return;
  }
  // Per query head (warp w: rows w, w + 4), one pass over the splits' states (one round trip
  // through L2): each lane keeps a running max and its sum rescaled to it, and parks the maxima
  // in shared memory (over the block's merge state, now published) until the largest is known;
  // then they become the weights exp2(max - largest). (total_s: free again after the barrier.)
  float* weights_s = acc_all;  // [rep][splits]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < rep; r += kDecodeWarps) {
    const int64_t first = (int64_t{b} * a.q_heads + h * rep + r) * a.splits;
    float* weights = weights_s + r * a.splits;
    float m = -INFINITY, total = 0.0f;
    for (int s = lane; s < a.splits; s += 32) {
      const float max_of_split = __ldcg(ws.max + first + s),
                  sum_of_split = __ldcg(ws.sum + first + s);
      weights[s] = max_of_split;
      if (max_of_split > m) {
        total = total * exp2f(m - max_of_split) + sum_of_split;  // (m = -inf: total is 0)
        m = max_of_split;
      } else if (max_of_split != -INFINITY) {
        total += sum_of_split * exp2f(max_of_split - m);
      }
    }
    const float largest = warp_max(m);
    total = warp_sum(m == -INFINITY ? 0.0f : total * exp2f(m - largest));
    for (int s = lane; s < a.splits; s += 32)
      weights[s] = largest == -INFINITY ? 0.0f : exp2f(weights[s] - largest);
    if (lane == 0) total_s[r] = total;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < rep * DIM; i += blockDim.x) {
    const int r = i / DIM, d = i % DIM;
    const int64_t head = int64_t{b} * a.q_heads + h * rep + r;
    out[head * DIM + d] = from_float<T>(combine_partials(
        ws.acc + head * a.splits * DIM, a.splits, DIM, d, weights_s + r * a.splits, total_s[r]));
  }
  stamp(5);
}

}  // namespace kivi::kivi_cache::cuda
