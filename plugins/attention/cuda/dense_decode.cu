#include "dense_decode.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "kivi/model/cuda/async_copy.cuh"

namespace kivi::attention::cuda {
namespace {

using kivi::cuda_copy::copy_async16;
using kivi::cuda_copy::copy_async_commit;
using kivi::cuda_copy::copy_async_wait;

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

// Eight elements of one 16-byte shared-memory load, as floats.
template <class T>
__device__ __forceinline__ void load8(const T* p, float (&out)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  T v[8];
  memcpy(v, &raw, sizeof raw);
#pragma unroll
  for (int e = 0; e < 8; ++e) out[e] = to_float(v[e]);
}

// Eight elements of one 16-byte global load (read-only path), as floats.
template <class T>
__device__ __forceinline__ void load8_global(const T* p, float (&out)[8]) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
  T v[8];
  memcpy(v, &raw, sizeof raw);
#pragma unroll
  for (int e = 0; e < 8; ++e) out[e] = to_float(v[e]);
}

// Rows [0, n) of a [n, D] slice (row stride `stride` elements) into shared [n, D], dense.
template <class T, int D>
__device__ __forceinline__ void stage_rows(T* shared, const T* global, int64_t stride, int n,
                                           int tid) {
  constexpr int kParts = D / 8;
  for (int i = tid; i < n * kParts; i += kThreads) {
    const int j = i / kParts, part = i % kParts;
    copy_async16(shared + j * D + part * 8, global + j * stride + part * 8);
  }
}

// Dynamic shared memory of a split of `chunk` keys: the keys and the values as stored, and
// kG x chunk scores. The per-warp sums of the value pass reuse the keys' space.
template <class T, int D, int kG>
constexpr size_t split_shared_bytes(int chunk) {
  const size_t rows = size_t(chunk) * D * sizeof(T);
  const size_t acc = size_t(kWarps) * kG * D * sizeof(float);
  return (rows > acc ? rows : acc) + rows + size_t(kG) * chunk * sizeof(float);
}

// Block (split, kv head, row): the keys [t0, t0 + n) of one row for the kG query heads of one kv
// head. The block first puts its keys and values in flight into shared memory (asynchronous
// copies: a block of 128 keys has all 64 KB requested at once; reading them into registers a few
// loads per thread at a time left HBM mostly idle, ~1.2 TB/s at 4K). Each key is then read by
// D / 8 lanes (8 elements each); scores go to shared memory, the split's softmax (base 2) is
// taken there, then the values are summed with those weights. One split: the normalized
// output; several: unnormalized sums, max and total per split.
template <class T, int D, int kG>
__global__ void __launch_bounds__(kThreads) split_kernel(DenseDecode a) {
  constexpr int kLanes = D / 8;             // lanes per key (8 elements each)
  constexpr int kPerWarp = 32 / kLanes;     // keys per warp and pass
  constexpr int kKeys = kThreads / kLanes;  // keys per block and pass
  extern __shared__ __align__(16) unsigned char s_raw[];
  const size_t rows_bytes = size_t(a.chunk) * D * sizeof(T);
  const size_t acc_bytes = size_t(kWarps) * kG * D * sizeof(float);
  T* s_k = reinterpret_cast<T*>(s_raw);
  float* s_acc = reinterpret_cast<float*>(s_raw);  // [kWarps][kG][D], once the keys are read
  T* s_v = reinterpret_cast<T*>(s_raw + (rows_bytes > acc_bytes ? rows_bytes : acc_bytes));
  float* s_p = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(s_v) + rows_bytes);
  __shared__ float s_m[kG], s_l[kG];

  const int b = blockIdx.z, kvh = blockIdx.y, split = blockIdx.x;
  const int group = a.q_heads / a.kv_heads;
  const int t0 = a.first[b] + split * a.chunk;
  const int n = max(0, min(a.end[b], t0 + a.chunk) - t0);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, sub = lane % kLanes;

  // Keys, then values, in flight (two commit groups: the scores wait for the keys alone).
  const T* keys = static_cast<const T*>(a.k) + b * a.k_stride[0] + kvh * a.k_stride[1] +
                  int64_t{t0} * a.k_stride[2];
  const T* values = static_cast<const T*>(a.v) + b * a.v_stride[0] + kvh * a.v_stride[1] +
                    int64_t{t0} * a.v_stride[2];
  stage_rows<T, D>(s_k, keys, a.k_stride[2], n, tid);
  copy_async_commit();
  stage_rows<T, D>(s_v, values, a.v_stride[2], n, tid);
  copy_async_commit();

  // This lane's 8 dims of each query head, scaled so that exp2 gives the softmax.
  float q[kG][8];
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    if (g < group) {
      const T* qrow = static_cast<const T*>(a.q) + b * a.q_stride[0] +
                      int64_t{kvh * group + g} * a.q_stride[1] + sub * 8;
      load8_global(qrow, q[g]);
#pragma unroll
      for (int e = 0; e < 8; ++e) q[g][e] *= a.scale * kLog2e;
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) q[g][e] = 0.0f;
    }
  }
  copy_async_wait<1>();
  __syncthreads();

  // Scores, D / 8 lanes per key. The loop is uniform across a warp (its shuffles need every
  // lane). (16 dims per lane, half the shuffles, measured slower: more registers, fewer blocks
  // per SM.)
#pragma unroll 4
  for (int base = warp * kPerWarp; base < n; base += kKeys) {
    const int j = base + lane / kLanes;
    float kf[8];
    if (j < n) {
      load8(s_k + j * D + sub * 8, kf);
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
      if (sub == 0 && j < n && g < group) s_p[g * a.chunk + j] = s;
    }
  }
  __syncthreads();

  // The split's softmax per query head: one warp per head.
  for (int g = warp; g < group; g += kWarps) {
    float* p_row = s_p + g * a.chunk;
    float m = -INFINITY;
    for (int j = lane; j < n; j += 32) m = fmaxf(m, p_row[j]);
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2)
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
    float l = 0.0f;
    for (int j = lane; j < n; j += 32) {
      const float p = exp2f(p_row[j] - m);
      p_row[j] = p;
      l += p;
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) l += __shfl_xor_sync(0xffffffffu, l, offset);
    if (lane == 0) {
      s_m[g] = m;
      s_l[g] = l;
    }
  }
  copy_async_wait<0>();
  __syncthreads();

  // Values weighted by the softmax.
  float acc[kG][8];
#pragma unroll
  for (int g = 0; g < kG; ++g)
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[g][e] = 0.0f;
#pragma unroll 4
  for (int base = warp * kPerWarp; base < n; base += kKeys) {
    const int j = base + lane / kLanes;
    if (j >= n) continue;
    float vf[8];
    load8(s_v + j * D + sub * 8, vf);
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      const float p = s_p[g * a.chunk + j];
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] = fmaf(p, vf[e], acc[g][e]);
    }
  }
  // The warp's keys into its first kLanes lanes, then the warps through shared memory (over the
  // keys' space: every thread passed the barrier after the scores, so no key is read again).
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
      for (int e = 0; e < 8; ++e) s_acc[(warp * kG + g) * D + sub * 8 + e] = acc[g][e];
  __syncthreads();

  for (int idx = tid; idx < group * D; idx += kThreads) {
    const int g = idx / D, d = idx % D;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += s_acc[(w * kG + g) * D + d];
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

// Block (query head, row): the splits' sums rescaled to one max. The splits' maxima and
// totals are read by all threads at once into shared memory; then warp w sums splits w, w + 8,
// ... (lane: dims lane, lane + 32, ...), so that eight warps' loads are in flight rather than
// one dependent chain per dimension (which took 27 us over 256 splits at 32K).
template <class T, int D>
__global__ void __launch_bounds__(kThreads) combine_kernel(DenseDecode a) {
  constexpr int kPerLane = D / 32;
  __shared__ float s_weight[kDecodeMaxSplits];
  __shared__ float s_reduce[kWarps];
  __shared__ float s_part[kWarps][D];
  const int64_t head = int64_t{blockIdx.y} * a.q_heads + blockIdx.x;
  const float* ws = a.workspace + head * a.splits * (D + 2);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  float m = -INFINITY;
  for (int s = tid; s < a.splits; s += kThreads) m = fmaxf(m, ws[s * (D + 2) + D]);
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2)
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
  if (lane == 0) s_reduce[warp] = m;
  __syncthreads();
  m = s_reduce[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) m = fmaxf(m, s_reduce[w]);
  __syncthreads();
  float total = 0.0f;
  for (int s = tid; s < a.splits; s += kThreads) {
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
  __syncthreads();  // also publishes s_weight
  total = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) total += s_reduce[w];
  float sum[kPerLane] = {};
#pragma unroll 4
  for (int s = warp; s < a.splits; s += kWarps) {
    const float w = s_weight[s];
    const float* row = ws + s * (D + 2);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) sum[i] = fmaf(row[lane + 32 * i], w, sum[i]);
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) s_part[warp][lane + 32 * i] = sum[i];
  __syncthreads();
  for (int d = tid; d < D; d += kThreads) {
    float x = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) x += s_part[w][d];
    static_cast<T*>(a.out)[head * D + d] = from_float<T>(total > 0.0f ? x / total : 0.0f);
  }
}

// Over 48 KB of dynamic shared memory needs the kernel's consent, given once per device (the
// attribute belongs to the device's context). Devices past the mask's 64 ask at every launch.
template <class T, int D, int kG>
void allow_split_shared_memory() {
  static std::atomic<uint64_t> allowed{0};
  int device = 0;
  cudaGetDevice(&device);
  const uint64_t bit = device < 64 ? uint64_t{1} << device : 0;
  if (bit != 0 && (allowed.load(std::memory_order_acquire) & bit)) return;
  cudaFuncSetAttribute(split_kernel<T, D, kG>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                       static_cast<int>(split_shared_bytes<T, D, kG>(kDecodeMaxChunk)));
  allowed.fetch_or(bit, std::memory_order_acq_rel);
}

template <class T, int D, int kG>
void launch(const DenseDecode& a, cudaStream_t stream) {
  allow_split_shared_memory<T, D, kG>();
  // 256 threads per block: 512 measured the same at 4K and slower at 32K (2026-12-04).
  const dim3 grid(static_cast<unsigned>(a.splits), static_cast<unsigned>(a.kv_heads),
                  static_cast<unsigned>(a.batch));
  split_kernel<T, D, kG><<<grid, kThreads, split_shared_bytes<T, D, kG>(a.chunk), stream>>>(a);
  if (a.splits > 1)
    combine_kernel<T, D><<<dim3(static_cast<unsigned>(a.q_heads), static_cast<unsigned>(a.batch)),
                           kThreads, 0, stream>>>(a);
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

int64_t plan_dense_decode(DenseDecode& a) {
  int longest = 0;
  for (int b = 0; b < a.batch; ++b) longest = std::max(longest, a.end[b] - a.first[b]);
  // Splits of 128 keys: 64 KB of keys and values at D = 128, all in flight at once, three
  // blocks to an SM. Measured on the H200 at batch 1 (4K and 32K keys), 64 and 256 were slower.
  // Longer only where the combine's limit on splits asks for it.
  const int needed = ((longest + kDecodeMaxSplits - 1) / kDecodeMaxSplits + 31) / 32 * 32;
  a.chunk = std::min(kDecodeMaxChunk, std::max(128, needed));
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
