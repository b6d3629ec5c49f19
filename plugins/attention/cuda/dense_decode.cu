#include "dense_decode.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>

namespace kivi::attention::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float to_float(__half x) {
  return __half2float(x);
}
__device__ __forceinline__ float to_float(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <class T>
__device__ __forceinline__ T from_float(float x) {
  if constexpr (std::is_same_v<T, __half>)
    return __float2half_rn(x);
  else
    return __float2bfloat16_rn(x);
}

// Eight elements of one 16-byte load, as floats.
template <class T>
__device__ __forceinline__ void load8(const T* p, float (&out)[8]) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
  T v[8];
  memcpy(v, &raw, sizeof raw);
#pragma unroll
  for (int e = 0; e < 8; ++e) out[e] = to_float(v[e]);
}

// Block (split, kv head, row): the keys [t0, t0 + n) of one row for the kG query heads of one kv
// head. Each key is read by D / 8 lanes (8 elements each); scores go to shared memory, the
// split's softmax (base 2) is taken there, then the values are summed with those weights.
// One split: the normalized output; several: unnormalized sums, max and total per split.
template <class T, int D, int kG>
__global__ void __launch_bounds__(kThreads) split_kernel(DenseDecode a) {
  constexpr int kLanes = D / 8;               // lanes per key
  constexpr int kPerWarp = 32 / kLanes;       // keys per warp and pass
  constexpr int kKeys = kThreads / kLanes;    // keys per block and pass
  __shared__ float s_p[kG][kDecodeMaxChunk];  // scores, then weights
  __shared__ float s_acc[kWarps][kG][D];
  __shared__ float s_m[kG], s_l[kG];

  const int b = blockIdx.z, kvh = blockIdx.y, split = blockIdx.x;
  const int group = a.q_heads / a.kv_heads;
  const int t0 = a.first[b] + split * a.chunk;
  const int n = max(0, min(a.end[b], t0 + a.chunk) - t0);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, sub = lane % kLanes;

  // This lane's 8 dims of each query head, scaled so that exp2 gives the softmax.
  float q[kG][8];
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    if (g < group) {
      const T* qrow = static_cast<const T*>(a.q) + b * a.q_stride[0] +
                      int64_t{kvh * group + g} * a.q_stride[1] + sub * 8;
      load8(qrow, q[g]);
#pragma unroll
      for (int e = 0; e < 8; ++e) q[g][e] *= a.scale * kLog2e;
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) q[g][e] = 0.0f;
    }
  }

  // Scores. The loop is uniform across a warp (its shuffles need every lane).
  const T* keys = static_cast<const T*>(a.k) + b * a.k_stride[0] + kvh * a.k_stride[1] +
                  int64_t{t0} * a.k_stride[2] + sub * 8;
#pragma unroll 4
  for (int base = warp * kPerWarp; base < n; base += kKeys) {
    const int j = base + lane / kLanes;
    float kf[8];
    if (j < n) {
      load8(keys + int64_t{j} * a.k_stride[2], kf);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) kf[e] = 0.0f;
    }
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      float s = 0.0f;
#pragma unroll
      for (int e = 0; e < 8; ++e) s = fmaf(q[g][e], kf[e], s);
#pragma unroll
      for (int offset = kLanes / 2; offset > 0; offset /= 2)
        s += __shfl_xor_sync(0xffffffffu, s, offset);
      if (sub == 0 && j < n && g < group) s_p[g][j] = s;
    }
  }
  __syncthreads();

  // The split's softmax per query head: one warp per head.
  for (int g = warp; g < group; g += kWarps) {
    float m = -INFINITY;
    for (int j = lane; j < n; j += 32) m = fmaxf(m, s_p[g][j]);
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2)
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
    float l = 0.0f;
    for (int j = lane; j < n; j += 32) {
      const float p = exp2f(s_p[g][j] - m);
      s_p[g][j] = p;
      l += p;
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) l += __shfl_xor_sync(0xffffffffu, l, offset);
    if (lane == 0) {
      s_m[g] = m;
      s_l[g] = l;
    }
  }
  __syncthreads();

  // Values weighted by the softmax.
  float acc[kG][8];
#pragma unroll
  for (int g = 0; g < kG; ++g)
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[g][e] = 0.0f;
  const T* values = static_cast<const T*>(a.v) + b * a.v_stride[0] + kvh * a.v_stride[1] +
                    int64_t{t0} * a.v_stride[2] + sub * 8;
#pragma unroll 4
  for (int base = warp * kPerWarp; base < n; base += kKeys) {
    const int j = base + lane / kLanes;
    if (j >= n) continue;
    float vf[8];
    load8(values + int64_t{j} * a.v_stride[2], vf);
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      const float p = s_p[g][j];
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] = fmaf(p, vf[e], acc[g][e]);
    }
  }
  // The warp's keys into its first kLanes lanes, then the warps through shared memory.
#pragma unroll
  for (int g = 0; g < kG; ++g)
#pragma unroll
    for (int e = 0; e < 8; ++e)
#pragma unroll
      for (int offset = kLanes; offset < 32; offset *= 2)
        acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], offset);
  if (lane < kLanes)
#pragma unroll
    for (int g = 0; g < kG; ++g)
#pragma unroll
      for (int e = 0; e < 8; ++e) s_acc[warp][g][sub * 8 + e] = acc[g][e];
  __syncthreads();

  for (int idx = tid; idx < group * D; idx += kThreads) {
    const int g = idx / D, d = idx % D;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += s_acc[w][g][d];
    const int64_t head = int64_t{b} * a.q_heads + kvh * group + g;
    if (a.splits == 1) {
      static_cast<T*>(a.out)[head * D + d] = from_float<T>(s_l[g] > 0.0f ? sum / s_l[g] : 0.0f);
    } else {
      float* ws = a.workspace + (head * a.splits + split) * (D + 2);
      ws[d] = sum;
      if (d == 0) {
        ws[D] = s_m[g];
        ws[D + 1] = s_l[g];
      }
    }
  }
}

// Block (query head, row), one thread per dimension: the splits' sums rescaled to one max. The
// splits' maxima and totals are read by all threads at once into shared memory (a loop of
// dependent loads per thread made this kernel as slow as the split kernel itself).
template <class T, int D>
__global__ void __launch_bounds__(D) combine_kernel(DenseDecode a) {
  __shared__ float s_weight[kDecodeMaxSplits];
  __shared__ float s_reduce[D / 32];
  __shared__ float s_total;
  const int64_t head = int64_t{blockIdx.y} * a.q_heads + blockIdx.x;
  const float* ws = a.workspace + head * a.splits * (D + 2);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  float m = -INFINITY;
  for (int s = tid; s < a.splits; s += D) m = fmaxf(m, ws[s * (D + 2) + D]);
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2)
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
  if (lane == 0) s_reduce[warp] = m;
  __syncthreads();
  m = s_reduce[0];
#pragma unroll
  for (int w = 1; w < D / 32; ++w) m = fmaxf(m, s_reduce[w]);
  __syncthreads();
  float total = 0.0f;
  for (int s = tid; s < a.splits; s += D) {
    const float l = ws[s * (D + 2) + D + 1];
    // A split with no keys has l = 0 and m = -inf: weight 0, and no inf - inf.
    const float w = l > 0.0f ? exp2f(ws[s * (D + 2) + D] - m) : 0.0f;
    s_weight[s] = w;
    total += l * w;
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2)
    total += __shfl_xor_sync(0xffffffffu, total, offset);
  if (lane == 0) s_reduce[warp] = total;
  __syncthreads();
  if (tid == 0) {
    float t = 0.0f;
#pragma unroll
    for (int w = 0; w < D / 32; ++w) t += s_reduce[w];
    s_total = t;
  }
  __syncthreads();
  float sum = 0.0f;
#pragma unroll 8
  for (int s = 0; s < a.splits; ++s) sum = fmaf(ws[s * (D + 2) + tid], s_weight[s], sum);
  static_cast<T*>(a.out)[head * D + tid] = from_float<T>(s_total > 0.0f ? sum / s_total : 0.0f);
}

template <class T, int D, int kG>
void launch(const DenseDecode& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(a.splits), static_cast<unsigned>(a.kv_heads),
                  static_cast<unsigned>(a.batch));
  split_kernel<T, D, kG><<<grid, kThreads, 0, stream>>>(a);
  if (a.splits > 1)
    combine_kernel<T, D>
        <<<dim3(static_cast<unsigned>(a.q_heads), static_cast<unsigned>(a.batch)), D, 0, stream>>>(
            a);
}

template <class T, int D>
void launch_group(const DenseDecode& a, cudaStream_t stream) {
  const int group = a.q_heads / a.kv_heads;
  if (group <= 1)
    launch<T, D, 1>(a, stream);
  else if (group <= 2)
    launch<T, D, 2>(a, stream);
  else if (group <= 4)
    launch<T, D, 4>(a, stream);
  else
    launch<T, D, 8>(a, stream);
}

template <class T>
void launch_dim(const DenseDecode& a, cudaStream_t stream) {
  if (a.dim == 64)
    launch_group<T, 64>(a, stream);
  else
    launch_group<T, 128>(a, stream);
}

}  // namespace

std::string dense_decode_refusal(int batch, int q_heads, int kv_heads, int dim) {
  if (batch < 1 || batch > kDecodeMaxRows)
    return "batch " + std::to_string(batch) + " outside [1, " + std::to_string(kDecodeMaxRows) +
           "]";
  if (dim != 64 && dim != 128) return "head_dim " + std::to_string(dim) + " is not 64 or 128";
  if (kv_heads < 1 || q_heads % kv_heads != 0 || q_heads / kv_heads > kDecodeMaxGroup)
    return std::to_string(q_heads) + " query heads over " + std::to_string(kv_heads) +
           " kv heads (at most " + std::to_string(kDecodeMaxGroup) + " per kv head)";
  return {};
}

int64_t plan_dense_decode(DenseDecode& a, int sm_count) {
  int longest = 0;
  for (int b = 0; b < a.batch; ++b) longest = std::max(longest, a.end[b] - a.first[b]);
  // About three blocks of 256 threads per SM, in splits of 128-256 keys.
  const int rows = std::max(1, a.batch * a.kv_heads);
  const int wanted = std::max(1, (3 * sm_count + rows - 1) / rows);
  int chunk = (std::max(longest, 1) + wanted - 1) / wanted;
  chunk = std::min(kDecodeMaxChunk, std::max(128, (chunk + 31) / 32 * 32));
  // The combine holds one weight per split: longer rows take longer splits.
  chunk = std::max(chunk, ((longest + kDecodeMaxSplits - 1) / kDecodeMaxSplits + 31) / 32 * 32);
  a.chunk = std::min(kDecodeMaxChunk, chunk);
  a.splits = std::max(1, (longest + a.chunk - 1) / a.chunk);
  return a.splits > 1 ? int64_t{a.batch} * a.q_heads * a.splits * (a.dim + 2) : 0;
}

std::string dense_decode(const DenseDecode& a, cudaStream_t stream) {
  const std::string refusal = dense_decode_refusal(a.batch, a.q_heads, a.kv_heads, a.dim);
  if (!refusal.empty()) return "dense decode attention: " + refusal;
  if (a.type == Elem::kHalf)
    launch_dim<__half>(a, stream);
  else
    launch_dim<__nv_bfloat16>(a, stream);
  const cudaError_t status = cudaGetLastError();
  return status == cudaSuccess
             ? std::string()
             : std::string("dense decode attention: launch failed: ") + cudaGetErrorString(status);
}

}  // namespace kivi::attention::cuda
