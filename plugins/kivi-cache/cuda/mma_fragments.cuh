// Tensor-core building blocks of the fused decode kernel: the m16n8k16 MMA (fp16 or bf16 inputs,
// float accumulators), T pairs as fragment registers, and cp.async / shared-memory word loads.
// (The codes' conversion to fragments is code_convert.cuh.)
//
// Fragment layout (PTX ISA, mma.m16n8k16, per lane: g = lane / 4, c = lane % 4):
//   A (16 x 16, row-major): a0 = A[g][2c, 2c+1]   a1 = A[g+8][2c, 2c+1]
//                           a2 = A[g][2c+8, +9]   a3 = A[g+8][2c+8, +9]
//   B (16 x 8, k x n):      b0 = B[2c, 2c+1][g]   b1 = B[2c+8, 2c+9][g]
//   C (16 x 8, float):      c0, c1 = C[g][2c, 2c+1]   c2, c3 = C[g+8][2c, 2c+1]
// The decode kernel works transposed, so that no fragment row is wasted on absent query heads:
// tokens or channels are the 16 rows (M), the (at most 8) query heads of a GQA group the 8
// columns (N) of every MMA.
#pragma once

#include <cstdint>
#include <type_traits>

#include "device_types.cuh"
#include "kivi/model/cuda/async_copy.cuh"

namespace kivi::kivi_cache::cuda {

template <class T>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack_pair<__half>(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}
template <>
__device__ __forceinline__ uint32_t pack_pair<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// A fragment register (two T values) as floats.
__device__ __forceinline__ float2 pair_to_float2(uint32_t bits, __half) {
  return __half22float2(*reinterpret_cast<const __half2*>(&bits));
}
__device__ __forceinline__ float2 pair_to_float2(uint32_t bits, __nv_bfloat16) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&bits));
}

// d (16 x 8) += A (16 x 16) * B (16 x 8), fp16 or bf16 inputs, float accumulators.
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                          uint32_t a3, uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

// The 8 x 8 matrix of 16-bit values of which this lane holds row g, columns 2c, 2c + 1 (a C
// fragment's half packed, or an A/B fragment register), transposed across the warp: the lane
// then holds row g of the transpose, i.e. rows 2c, 2c + 1 of column g.
__device__ __forceinline__ uint32_t transpose_pair(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

// Four 8 x 8 matrices of 16-bit values from shared memory in one instruction: lane 8j + i gives
// the address of row i of matrix j (16 contiguous bytes), and r[j] is this lane's register of
// matrix j: row g, columns 2c, 2c + 1, or with .trans of the transpose (rows 2c, 2c + 1 of
// column g). Four matrices make one A fragment (a0..a3).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

}  // namespace kivi::kivi_cache::cuda

namespace kivi::kivi_cache::cuda {

// Asynchronous global -> shared copies (sm_80+), one commit group per tile.
using kivi::cuda_copy::copy_async16;
using kivi::cuda_copy::copy_async_commit;
using kivi::cuda_copy::copy_async_wait;
__device__ __forceinline__ void copy_async8(void* shared_dst, const void* global_src) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(shared_dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(dst), "l"(global_src));
}

// N consecutive words from shared memory (16-byte aligned for N >= 4, 8-byte for N == 2).
template <int N>
__device__ __forceinline__ void shared_words(const uint32_t* p, uint32_t (&w)[N]) {
  if constexpr (N == 1) {
    w[0] = p[0];
  } else if constexpr (N == 2) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    w[0] = v.x;
    w[1] = v.y;
  } else {
#pragma unroll
    for (int i = 0; i < N / 4; ++i) {
      const uint4 v = reinterpret_cast<const uint4*>(p)[i];
      w[4 * i] = v.x;
      w[4 * i + 1] = v.y;
      w[4 * i + 2] = v.z;
      w[4 * i + 3] = v.w;
    }
  }
}

}  // namespace kivi::kivi_cache::cuda
