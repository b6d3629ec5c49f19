#include "fused_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace kivi::fused {
namespace {

__device__ __forceinline__ float to_float(__half x) {
  return __half2float(x);
}
__device__ __forceinline__ float to_float(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
__device__ __forceinline__ float to_float(float x) {
  return x;
}
template <class T>
__device__ __forceinline__ T from_float(float x) {
  if constexpr (std::is_same_v<T, __half>)
    return __float2half_rn(x);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __float2bfloat16_rn(x);
  else
    return x;
}
// What one ATen op on T tensors returns: computed in float, rounded to T.
template <class T>
__device__ __forceinline__ float round_to(float x) {
  return to_float(from_float<T>(x));
}

constexpr int kNormThreads = 256;

// One block per row.
template <class T>
__global__ void rms_norm_kernel(const T* x, int64_t x_stride, const T* w, T* y, int64_t cols,
                                float eps) {
  const T* row = x + blockIdx.x * x_stride;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < cols; i += kNormThreads) {
    const float v = to_float(row[i]);
    sum += v * v;
  }
  __shared__ float partial[kNormThreads / 32];
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    sum = threadIdx.x < kNormThreads / 32 ? partial[threadIdx.x] : 0.0f;
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (threadIdx.x == 0) partial[0] = sum;
  }
  __syncthreads();
  // As the reference: variance = mean(x^2) in float, x * rsqrt(variance + eps) cast to T, then
  // weight * that in T.
  const float inv = rsqrtf(partial[0] / static_cast<float>(cols) + eps);
  T* out = y + blockIdx.x * cols;
  for (int64_t i = threadIdx.x; i < cols; i += kNormThreads)
    out[i] = from_float<T>(to_float(w[i]) * round_to<T>(to_float(row[i]) * inv));
}

// One thread per (b, h, t, i < D/2): writes channels i and i + D/2.
template <class T>
__global__ void rotary_kernel(Rotary a) {
  const int64_t half = a.dim / 2;
  const int64_t n = a.batch * a.heads * a.tokens * half;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = idx % half;
    const int64_t t = (idx / half) % a.tokens;
    const int64_t h = (idx / (half * a.tokens)) % a.heads;
    const int64_t b = idx / (half * a.tokens * a.heads);
    const T* x =
        static_cast<const T*>(a.x) + b * a.x_stride[0] + h * a.x_stride[1] + t * a.x_stride[2];
    const int64_t cs = (b * a.tokens + t) * a.dim;
    const T* cos = static_cast<const T*>(a.cos) + cs;
    const T* sin = static_cast<const T*>(a.sin) + cs;
    const float x1 = to_float(x[i]), x2 = to_float(x[i + half]);
    T* out = static_cast<T*>(a.out) + ((b * a.heads + h) * a.tokens + t) * a.dim;
    // rotate_half(x) = cat(-x2, x1)
    // Explicit roundings (no contraction into an FMA, which float32 would otherwise get).
    out[i] = from_float<T>(__fadd_rn(round_to<T>(__fmul_rn(x1, to_float(cos[i]))),
                                     round_to<T>(__fmul_rn(-x2, to_float(sin[i])))));
    out[i + half] = from_float<T>(__fadd_rn(round_to<T>(__fmul_rn(x2, to_float(cos[i + half]))),
                                            round_to<T>(__fmul_rn(x1, to_float(sin[i + half])))));
  }
}

template <class T>
__global__ void silu_mul_kernel(const T* gate_up, int64_t gu_stride, T* out, int64_t rows,
                                int64_t inter) {
  const int64_t n = rows * inter;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / inter, j = idx % inter;
    const float g = to_float(gate_up[r * gu_stride + j]);
    const float up = to_float(gate_up[r * gu_stride + inter + j]);
    // ATen's silu: x / (1 + exp(-x)) in float, rounded to T; then the product in T.
    out[idx] = from_float<T>(round_to<T>(g / (1.0f + expf(-g))) * up);
  }
}

template <class Fn>
void with_type(ElemType type, Fn&& fn) {
  switch (type) {
    case ElemType::kHalf:
      return fn(__half{});
    case ElemType::kBFloat16:
      return fn(__nv_bfloat16{});
    default:
      return fn(float{});
  }
}

std::string launch_error(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) return {};
  return std::string(kernel) + ": launch failed: " + cudaGetErrorString(status);
}

// Enough blocks of 256 threads for n items, capped (the kernels stride over the rest).
unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks > 65535 ? 65535 : blocks);
}

}  // namespace

std::string rms_norm(ElemType type, const void* x, int64_t x_stride, const void* w, void* y,
                     int64_t rows, int64_t cols, float eps, cudaStream_t stream) {
  if (rows == 0) return {};
  if (rows > 0x7fffffff) return "fused rms_norm: too many rows";
  with_type(type, [&](auto tag) {
    using T = decltype(tag);
    rms_norm_kernel<T><<<static_cast<unsigned>(rows), kNormThreads, 0, stream>>>(
        static_cast<const T*>(x), x_stride, static_cast<const T*>(w), static_cast<T*>(y), cols,
        eps);
  });
  return launch_error("fused rms_norm");
}

std::string rotary(const Rotary& a, cudaStream_t stream) {
  const int64_t n = a.batch * a.heads * a.tokens * (a.dim / 2);
  if (n == 0) return {};
  with_type(a.type, [&](auto tag) {
    using T = decltype(tag);
    rotary_kernel<T><<<grid_for(n), 256, 0, stream>>>(a);
  });
  return launch_error("fused rotary");
}

std::string silu_mul(ElemType type, const void* gate_up, int64_t gu_stride, void* out, int64_t rows,
                     int64_t inter, cudaStream_t stream) {
  if (rows * inter == 0) return {};
  with_type(type, [&](auto tag) {
    using T = decltype(tag);
    silu_mul_kernel<T><<<grid_for(rows * inter), 256, 0, stream>>>(
        static_cast<const T*>(gate_up), gu_stride, static_cast<T*>(out), rows, inter);
  });
  return launch_error("fused silu_mul");
}

}  // namespace kivi::fused
