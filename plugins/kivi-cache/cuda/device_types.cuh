// Storage types of the KIVI kernels and their conversions to float.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "kivi_kernels.h"

namespace kivi::kivi_cache::cuda {

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
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}

// x rounded to T and back: what an ATen op on a T tensor returns, computed in float.
template <class T>
__device__ __forceinline__ float round_to(float x) {
  return to_float(from_float<T>(x));
}

// Calls fn(T{}) with the storage type named by `dtype`.
template <class Fn>
decltype(auto) with_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kHalf:
      return fn(__half{});
    case DType::kBFloat16:
      return fn(__nv_bfloat16{});
    default:
      return fn(float{});
  }
}

inline std::string launch_error(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) return {};
  return std::string(kernel) + ": launch failed: " + cudaGetErrorString(status);
}

}  // namespace kivi::kivi_cache::cuda
