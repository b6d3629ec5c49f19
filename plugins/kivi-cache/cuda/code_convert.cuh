// Packed codes to tensor-core operands with bit tricks: two codes per LOP3 + HFMA2.
//
// A 32-bit word whose two 16-bit halves hold codes at the same bit positions (the tile order,
// tile_order.h, puts them so) turns into MMA B-fragment registers, one pair per position:
// OR-ing a code at mantissa bits [k, k + bits) into the magic number M (1024 in fp16, 128 in
// bf16: one unit in the last mantissa place) gives M + code * 2^k exactly, and one fused
// multiply-add, times 2^-k minus M * 2^-k, leaves the code itself, exactly. Codes past the
// mantissa's width take one shift per run of positions. 8-bit codes do not fit bf16's 7-bit
// mantissa: they go through float.
#pragma once

#include <cstdint>
#include <type_traits>

#include "mma_fragments.cuh"

namespace kivi::kivi_cache::cuda {

template <class T>
struct MagicNumber {
  static constexpr bool kHalf = std::is_same_v<T, __half>;
  static constexpr int kMantissa = kHalf ? 10 : 7;
  static constexpr uint32_t kBits = kHalf ? 0x64006400u : 0x43004300u;  // 2^kMantissa per half
  // 2^e as a T bit pattern in both halves (normal range), and its negative.
  __host__ __device__ static constexpr uint32_t pow2(int e) {
    const uint32_t h = kHalf ? uint32_t(15 + e) << 10 : uint32_t(127 + e) << 7;
    return h | (h << 16);
  }
  __host__ __device__ static constexpr uint32_t neg_pow2(int e) { return pow2(e) | 0x80008000u; }
};

// x * y + z on T pairs (bit patterns).
template <class T>
__device__ __forceinline__ uint32_t fma_pair(uint32_t x, uint32_t y, uint32_t z) {
  using T2 = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
  const T2 r = __hfma2(*reinterpret_cast<const T2*>(&x), *reinterpret_cast<const T2*>(&y),
                       *reinterpret_cast<const T2*>(&z));
  return *reinterpret_cast<const uint32_t*>(&r);
}
// x * y on T pairs (one rounding of the exact product, as float math rounded once to T).
template <class T>
__device__ __forceinline__ uint32_t mul_pair(uint32_t x, uint32_t y) {
  using T2 = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
  const T2 r = __hmul2(*reinterpret_cast<const T2*>(&x), *reinterpret_cast<const T2*>(&y));
  return *reinterpret_cast<const uint32_t*>(&r);
}

// x * y - r on T pairs with one rounding: with r = x * y rounded (mul_pair), the rounding error
// of that product, for a second MMA term where one T's mantissa is not enough (bf16).
template <class T>
__device__ __forceinline__ uint32_t product_rest(uint32_t x, uint32_t y, uint32_t r) {
  using T2 = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
  const T2 v = __hfma2(*reinterpret_cast<const T2*>(&x), *reinterpret_cast<const T2*>(&y),
                       __hneg2(*reinterpret_cast<const T2*>(&r)));
  return *reinterpret_cast<const uint32_t*>(&v);
}

// (a & b) | c in one LOP3. Written as PTX because the compiler, given two 32-bit constants,
// emits an AND and an OR (an instruction holds one immediate); here it keeps one in a register.
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// The 16 / BITS code pairs of x: out[p] = (code at bits [p * BITS, (p + 1) * BITS) of the low
// half, the same position of the high half) as an exact T pair.
template <class T, int BITS>
__device__ __forceinline__ void unpack_halves(uint32_t x, uint32_t* out) {
  constexpr int kPer = 16 / BITS;
  using Magic = MagicNumber<T>;
  if constexpr (BITS > Magic::kMantissa) {
#pragma unroll
    for (int p = 0; p < kPer; ++p)
      out[p] = pack_pair<T>(static_cast<float>((x >> (p * BITS)) & 0xFFu),
                            static_cast<float>((x >> (16 + p * BITS)) & 0xFFu));
  } else {
    constexpr int kRun = Magic::kMantissa / BITS;  // positions converted without a shift
    constexpr uint32_t kMask = ((1u << BITS) - 1u) * 0x00010001u;
#pragma unroll
    for (int p = 0; p < kPer; ++p) {
      const int base = (p / kRun) * kRun * BITS, k = (p % kRun) * BITS;
      const uint32_t biased = and_or(x >> base, kMask << k, Magic::kBits);  // one LOP3
      out[p] = fma_pair<T>(biased, Magic::pow2(-k), Magic::neg_pow2(Magic::kMantissa - k));
    }
  }
}

// Two 16-bit halves as one pair: low half from the low 16 bits of `lo` (hi_half false) or its
// high 16 bits, likewise the high half from `hi`.
__device__ __forceinline__ uint32_t join_halves(uint32_t lo, uint32_t hi, bool high_halves) {
  return __byte_perm(lo, hi, high_halves ? 0x7632 : 0x5410);
}

}  // namespace kivi::kivi_cache::cuda
