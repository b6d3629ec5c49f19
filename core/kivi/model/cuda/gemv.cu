// The decode step's projections at batch 1-4 (fused_kernels.h gemv): a warp per output row
// streams the row's weights once with 16-byte loads, four in flight per lane, and takes the
// few input rows from L1. cuBLAS picks split-K kernels for these shapes at batch 1 (the o and
// down projections: a second, reducing kernel each) and reached 2.7-4.1 TB/s on the H200.
#include <cstring>

#include "elem_types.cuh"
#include "fused_kernels.h"

namespace kivi::fused {
namespace {

using namespace elem;

constexpr int kGemvWarps = 8;   // output rows per block
constexpr int kGemvUnroll = 4;  // 16-byte weight loads in flight per lane

// Weights are read once per step: around L1, so that it keeps the input rows.
__device__ __forceinline__ uint4 load_streaming(const uint4* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

template <class T>
__device__ __forceinline__ Pack<T, 8> as_pack(const uint4& raw) {
  Pack<T, 8> p;
  memcpy(&p, &raw, sizeof(p));
  return p;
}

template <class T, int kRows>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_kernel(Gemv a) {
  const int lane = threadIdx.x % 32;
  const int64_t n = int64_t{blockIdx.x} * kGemvWarps + threadIdx.x / 32;
  if (n >= a.n) return;
  const uint4* w = reinterpret_cast<const uint4*>(static_cast<const T*>(a.w) + n * a.k);
  const int vecs = static_cast<int>(a.k / 8);  // 16-byte vectors per row
  float acc[kRows];
#pragma unroll
  for (int m = 0; m < kRows; ++m) acc[m] = 0.0f;
  for (int base = lane; base < vecs; base += 32 * kGemvUnroll) {
    uint4 wr[kGemvUnroll];
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int i = base + u * 32;
      wr[u] = i < vecs ? load_streaming(w + i) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int i = base + u * 32;
      if (i >= vecs) break;
      const Pack<T, 8> wv = as_pack<T>(wr[u]);
#pragma unroll
      for (int m = 0; m < kRows; ++m) {
        const Pack<T, 8> xv = as_pack<T>(
            __ldg(reinterpret_cast<const uint4*>(static_cast<const T*>(a.x) + m * a.x_stride) + i));
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[m] = fmaf(to_float(wv.v[j]), to_float(xv.v[j]), acc[m]);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2)
      acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], offset);
  }
  if (lane != 0) return;
  const float b = a.bias != nullptr ? to_float(static_cast<const T*>(a.bias)[n]) : 0.0f;
#pragma unroll
  for (int m = 0; m < kRows; ++m) static_cast<T*>(a.y)[m * a.n + n] = from_float<T>(acc[m] + b);
}

template <class T>
void launch_gemv(const Gemv& a, cudaStream_t stream) {
  const auto grid = static_cast<unsigned>((a.n + kGemvWarps - 1) / kGemvWarps);
  const unsigned block = kGemvWarps * 32;
  switch (a.rows) {
    case 1:
      return gemv_kernel<T, 1><<<grid, block, 0, stream>>>(a);
    case 2:
      return gemv_kernel<T, 2><<<grid, block, 0, stream>>>(a);
    case 3:
      return gemv_kernel<T, 3><<<grid, block, 0, stream>>>(a);
    default:
      return gemv_kernel<T, 4><<<grid, block, 0, stream>>>(a);
  }
}

}  // namespace

std::string gemv(ElemType type, const Gemv& a, cudaStream_t stream) {
  if (a.rows == 0 || a.n == 0) return {};
  if (type == ElemType::kFloat) return "fused gemv: float32 is not served (cuBLAS is used)";
  if (a.rows < 0 || a.rows > kGemvMaxRows || a.k % 8 != 0 || a.x_stride % 8 != 0 ||
      a.k > (int64_t{1} << 30) || a.n > (int64_t{1} << 33))  // grid.x: n / 8 blocks
    return "fused gemv: unsupported shape (rows " + std::to_string(a.rows) + ", k " +
           std::to_string(a.k) + ", x stride " + std::to_string(a.x_stride) + ")";
  if (type == ElemType::kHalf)
    launch_gemv<__half>(a, stream);
  else
    launch_gemv<__nv_bfloat16>(a, stream);
  const cudaError_t status = cudaGetLastError();
  return status == cudaSuccess
             ? std::string()
             : std::string("fused gemv: launch failed: ") + cudaGetErrorString(status);
}

}  // namespace kivi::fused
