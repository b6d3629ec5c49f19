// Quantize-and-pack kernels for the KIVI cache's flushes: keys per channel over a token group,
// values per token over a channel group, written straight into the cache's storage.
//
// They compute what quantize.h's ATen ops compute, op by op in float with one rounding to the
// storage type after each (ATen's "opmath" for fp16/bf16), so codes, scales and minima match the
// ATen path: scale = (max - min) / (2^bits - 1), code = round(clamp((x - min) / scale)), with
// quantize.h's guards for constant groups and ranges that overflow the type.
#include <cmath>

#include "device_types.cuh"

namespace kivi::kivi_cache::cuda {
namespace {

struct GroupQuant {
  float min, scale, max_code;
};

template <class T>
__device__ GroupQuant group_quant(float lo, float hi, int bits) {
  const float max_code = static_cast<float>((1 << bits) - 1);
  float scale = round_to<T>(round_to<T>(hi - lo) / max_code);
  if (isinf(scale) && isfinite(lo) && isfinite(hi))
    scale = round_to<T>(round_to<T>(hi / max_code) - round_to<T>(lo / max_code));
  return {lo, scale, max_code};
}

template <class T>
__device__ uint32_t quant_code(float x, const GroupQuant& q) {
  if (q.scale == 0.0f) return 0;  // constant group: decodes to min exactly
  float c = round_to<T>(round_to<T>(x - q.min) / q.scale);
  c = fminf(fmaxf(c, 0.0f), q.max_code);
  return static_cast<uint32_t>(rintf(c));  // round half to even, as torch.round
}

// Min and max of `count` values at x[0], x[stride], ...
template <class T>
__device__ void min_max(const T* x, int64_t stride, int count, float& lo, float& hi) {
  lo = INFINITY;
  hi = -INFINITY;
  for (int j = 0; j < count; ++j) {
    const float v = to_float(x[j * stride]);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
}

// Packs `count` codes of x[0], x[stride], ... into count * bits / 32 words at out.
template <class T>
__device__ void pack_group(const T* x, int64_t stride, int count, const GroupQuant& q, int bits,
                           int32_t* out) {
  const int per_word = 32 / bits;
  for (int w = 0; w < count / per_word; ++w) {
    uint32_t word = 0;
    for (int j = 0; j < per_word; ++j)
      word |= quant_code<T>(to_float(x[(w * per_word + j) * stride]), q) << (j * bits);
    out[w] = static_cast<int32_t>(word);
  }
}

// One thread per (row, head, token group, channel): coalesced over channels.
template <class T>
__global__ void key_flush_kernel(KeyFlush a) {
  const int64_t total = int64_t{a.n} * a.heads * a.groups * a.dim;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int d = static_cast<int>(idx % a.dim);
    int64_t rest = idx / a.dim;
    const int g = static_cast<int>(rest % a.groups);
    rest /= a.groups;
    const int h = static_cast<int>(rest % a.heads);
    const int i = static_cast<int>(rest / a.heads);
    const int64_t* xs = a.x.stride;
    const T* x = static_cast<const T*>(a.x.data) + i * xs[0] + h * xs[1] +
                 int64_t{g} * a.group_size * xs[2] + d * xs[3];
    float lo, hi;
    min_max(x, xs[2], a.group_size, lo, hi);
    const GroupQuant q = group_quant<T>(lo, hi, a.bits);
    const int64_t* ss = a.scale_stride;
    const int64_t at = i * ss[0] + h * ss[1] + g * ss[2] + d * ss[3];
    static_cast<T*>(a.scale)[at] = from_float<T>(q.scale);
    static_cast<T*>(a.min)[at] = from_float<T>(q.min);
    const int64_t* cs = a.codes_stride;
    pack_group(x, xs[2], a.group_size, q, a.bits,
               a.codes + i * cs[0] + h * cs[1] + g * cs[2] + d * cs[3]);
  }
}

// One thread per (row, head, token, channel group).
template <class T>
__global__ void value_flush_kernel(ValueFlush a) {
  const int groups = a.dim / a.group_size;
  const int64_t total = int64_t{a.n} * a.heads * a.tokens * groups;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int c = static_cast<int>(idx % groups);
    int64_t rest = idx / groups;
    const int t = static_cast<int>(rest % a.tokens);
    rest /= a.tokens;
    const int h = static_cast<int>(rest % a.heads);
    const int i = static_cast<int>(rest / a.heads);
    const int64_t* xs = a.x.stride;
    const T* x = static_cast<const T*>(a.x.data) + i * xs[0] + h * xs[1] + t * xs[2] +
                 int64_t{c} * a.group_size * xs[3];
    float lo, hi;
    min_max(x, xs[3], a.group_size, lo, hi);
    const GroupQuant q = group_quant<T>(lo, hi, a.bits);
    const int64_t* ss = a.scale_stride;
    const int64_t at = i * ss[0] + h * ss[1] + t * ss[2] + c;
    static_cast<T*>(a.scale)[at] = from_float<T>(q.scale);
    static_cast<T*>(a.min)[at] = from_float<T>(q.min);
    const int64_t* cs = a.codes_stride;
    pack_group(x, xs[3], a.group_size, q, a.bits,
               a.codes + i * cs[0] + h * cs[1] + t * cs[2] + c * a.group_size * a.bits / 32);
  }
}

int grid_for(int64_t total, int block) {
  const int64_t blocks = (total + block - 1) / block;
  return static_cast<int>(blocks < 8192 ? (blocks > 0 ? blocks : 1) : 8192);
}

std::string check_bits(const char* what, int bits, int group_size) {
  if (bits != 2 && bits != 4 && bits != 8)
    return std::string(what) + ": bits = " + std::to_string(bits) + ", expected 2, 4 or 8";
  if (group_size <= 0 || group_size % (32 / bits) != 0)
    return std::string(what) + ": group_size = " + std::to_string(group_size) +
           " is not a multiple of the " + std::to_string(32 / bits) + " codes in a word";
  return {};
}

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kHalf: return "fp16";
    case DType::kBFloat16: return "bf16";
    default: return "fp32";
  }
}

std::string launch_key_flush(const KeyFlush& args, cudaStream_t stream) {
  if (std::string error = check_bits("kivi key flush", args.bits, args.group_size); !error.empty())
    return error;
  const int64_t total = int64_t{args.n} * args.heads * args.groups * args.dim;
  if (total == 0) return {};
  constexpr int kBlock = 128;
  with_dtype(args.dtype, [&](auto tag) {
    key_flush_kernel<decltype(tag)><<<grid_for(total, kBlock), kBlock, 0, stream>>>(args);
  });
  return launch_error("kivi key flush");
}

std::string launch_value_flush(const ValueFlush& args, cudaStream_t stream) {
  if (std::string error = check_bits("kivi value flush", args.bits, args.group_size);
      !error.empty())
    return error;
  if (args.dim % args.group_size != 0)
    return "kivi value flush: head_dim " + std::to_string(args.dim) +
           " is not a multiple of group_size " + std::to_string(args.group_size);
  const int64_t total = int64_t{args.n} * args.heads * args.tokens * (args.dim / args.group_size);
  if (total == 0) return {};
  constexpr int kBlock = 128;
  with_dtype(args.dtype, [&](auto tag) {
    value_flush_kernel<decltype(tag)><<<grid_for(total, kBlock), kBlock, 0, stream>>>(args);
  });
  return launch_error("kivi value flush");
}

}  // namespace kivi::kivi_cache::cuda
