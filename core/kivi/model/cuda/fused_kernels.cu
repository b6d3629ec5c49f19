#include "fused_kernels.h"

#include "elem_types.cuh"

namespace kivi::fused {
namespace {

using namespace elem;

constexpr int kNormThreads = 256;

// One block per row, kVec elements per load. The first pass (with kAdd: x + delta, rounded to T
// as ATen's add rounds, stored to `sum`) accumulates the squares; the second re-reads the row
// (an L1 hit) and writes weight * T(x * rsqrt(mean + eps)). The old version loaded one element
// per iteration of a loop the compiler did not unroll, so a 4096-wide row took 16 dependent
// global loads per thread: 7.9 us per call, 65 calls per decode step of an 8B model.
template <class T, int kVec, bool kAdd>
__global__ void __launch_bounds__(kNormThreads) rms_norm_kernel(NormRows a) {
  using P = Pack<T, kVec>;
  const int64_t r = blockIdx.x;
  const int n = static_cast<int>(a.cols / kVec);
  const P* x = reinterpret_cast<const P*>(static_cast<const T*>(a.x) + r * a.x_stride);
  P* sum_row = nullptr;
  float sum = 0.0f;
  if constexpr (kAdd) {
    const P* d = reinterpret_cast<const P*>(static_cast<const T*>(a.delta) + r * a.delta_stride);
    sum_row = reinterpret_cast<P*>(static_cast<T*>(a.sum) + r * a.cols);
#pragma unroll 4
    for (int i = threadIdx.x; i < n; i += kNormThreads) {
      P v = x[i];
      const P dv = d[i];
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        v.v[j] = from_float<T>(__fadd_rn(to_float(v.v[j]), to_float(dv.v[j])));
        const float f = to_float(v.v[j]);
        sum += f * f;
      }
      sum_row[i] = v;
    }
  } else {
#pragma unroll 4
    for (int i = threadIdx.x; i < n; i += kNormThreads) {
      const P v = x[i];
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const float f = to_float(v.v[j]);
        sum += f * f;
      }
    }
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
  const float inv = rsqrtf(partial[0] / static_cast<float>(a.cols) + a.eps);
  const P* src = kAdd ? sum_row : x;  // this thread wrote the sums it reads back
  const P* w = static_cast<const P*>(a.w);
  P* out = static_cast<P*>(a.y) + r * n;
#pragma unroll 4
  for (int i = threadIdx.x; i < n; i += kNormThreads) {
    const P v = src[i], wv = w[i];
    P o;
#pragma unroll
    for (int j = 0; j < kVec; ++j)
      o.v[j] = from_float<T>(to_float(wv.v[j]) * round_to<T>(to_float(v.v[j]) * inv));
    out[i] = o;
  }
}

int64_t rotary_items(const Rotary& a) {
  return a.batch * a.heads * a.tokens * (a.dim / 2);
}

// Item idx of a rotary job: (b, h, t, i < D/2) writes channels i and i + D/2.
template <class T>
__device__ __forceinline__ void rotate_one(const Rotary& a, int64_t idx) {
  const int64_t half = a.dim / 2;
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

// One thread per item of `a`, then of `b` (q and k of a layer in one launch; b may be empty).
template <class T>
__global__ void rotary_kernel(Rotary a, Rotary b, int64_t items_a, int64_t items) {
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < items;
       idx += int64_t{gridDim.x} * blockDim.x) {
    if (idx < items_a)
      rotate_one<T>(a, idx);
    else
      rotate_one<T>(b, idx - items_a);
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

namespace {

// 16-byte loads when every row start allows them, else one element at a time.
template <class T, bool kAdd>
void launch_norm(const NormRows& a, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  bool vector =
      a.cols % kVec == 0 && a.x_stride % kVec == 0 && aligned(a.x) && aligned(a.w) && aligned(a.y);
  if (kAdd) vector = vector && a.delta_stride % kVec == 0 && aligned(a.delta) && aligned(a.sum);
  const auto grid = static_cast<unsigned>(a.rows);
  if (vector)
    rms_norm_kernel<T, kVec, kAdd><<<grid, kNormThreads, 0, stream>>>(a);
  else
    rms_norm_kernel<T, 1, kAdd><<<grid, kNormThreads, 0, stream>>>(a);
}

std::string norm(ElemType type, const NormRows& a, bool add, cudaStream_t stream) {
  if (a.rows == 0) return {};
  if (a.rows > 0x7fffffff || a.cols > 0x7fffffff) return "fused rms_norm: too many rows or columns";
  with_type(type, [&](auto tag) {
    using T = decltype(tag);
    if (add)
      launch_norm<T, true>(a, stream);
    else
      launch_norm<T, false>(a, stream);
  });
  return launch_error(add ? "fused add + rms_norm" : "fused rms_norm");
}

}  // namespace

std::string rms_norm(ElemType type, const void* x, int64_t x_stride, const void* w, void* y,
                     int64_t rows, int64_t cols, float eps, cudaStream_t stream) {
  NormRows a;
  a.x = x;
  a.x_stride = x_stride;
  a.w = w;
  a.y = y;
  a.rows = rows;
  a.cols = cols;
  a.eps = eps;
  return norm(type, a, false, stream);
}

std::string add_rms_norm(ElemType type, const NormRows& rows, cudaStream_t stream) {
  return norm(type, rows, true, stream);
}

std::string rotary(const Rotary& a, cudaStream_t stream) {
  return rotary_pair(a, Rotary{}, stream);
}

std::string rotary_pair(const Rotary& a, const Rotary& b, cudaStream_t stream) {
  const int64_t items_a = rotary_items(a), items = items_a + rotary_items(b);
  if (items == 0) return {};
  with_type(a.type, [&](auto tag) {
    using T = decltype(tag);
    rotary_kernel<T><<<grid_for(items), 256, 0, stream>>>(a, b, items_a, items);
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
