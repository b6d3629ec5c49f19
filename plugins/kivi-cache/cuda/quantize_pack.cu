// Quantize-and-pack kernels for the KIVI cache's flushes: keys per channel over a token group,
// values per token over a channel group, written straight into the cache's storage.
//
// They compute what quantize.h's ATen ops compute, op by op in float with one rounding to the
// storage type after each (ATen's "opmath" for fp16/bf16), so codes, scales and minima match the
// ATen path: scale = (max - min) / (2^bits - 1), code = round(clamp((x - min) / scale)), with
// quantize.h's guards for constant groups and ranges that overflow the type.
#include <cmath>

#include "quant_math.cuh"

namespace kivi::kivi_cache::cuda {
namespace {

// One block per (row, head, token group). Threads take channels: each quantizes its channel's
// G tokens and ORs the codes into the block's words in shared memory, which then go out whole.
template <class T>
__global__ void key_flush_kernel(KeyFlush a) {
  extern __shared__ uint32_t block_words[];  // D * G * bits / 32
  const int words = a.dim * a.group_size * a.bits / 32;
  const int g = blockIdx.x % a.groups, h = (blockIdx.x / a.groups) % a.heads,
            i = blockIdx.x / (a.groups * a.heads);
  for (int w = threadIdx.x; w < words; w += blockDim.x) block_words[w] = 0;
  __syncthreads();
  const int64_t* xs = a.x.stride;
  for (int d = threadIdx.x; d < a.dim; d += blockDim.x) {
    const T* x = static_cast<const T*>(a.x.data) + i * xs[0] + h * xs[1] +
                 int64_t{g} * a.group_size * xs[2] + d * xs[3];
    float lo, hi;
    min_max(x, xs[2], a.group_size, lo, hi);
    const GroupQuant q = group_quant<T>(lo, hi, a.bits);
    const int64_t* ss = a.scale_stride;
    const int64_t at = i * ss[0] + h * ss[1] + g * ss[2] + d * ss[3];
    static_cast<T*>(a.scale)[at] = from_float<T>(q.scale);
    static_cast<T*>(a.min)[at] = from_float<T>(q.min);
    for (int t = 0; t < a.group_size; ++t) {
      int word, bit;
      key_slot(d, t, a.dim, a.group_size, a.bits, a.tile_order, word, bit);
      atomicOr(&block_words[word], quant_code<T>(to_float(x[t * xs[2]]), q) << bit);
    }
  }
  __syncthreads();
  const int64_t* cs = a.codes_stride;
  int32_t* out = a.codes + i * cs[0] + h * cs[1] + g * cs[2];
  for (int w = threadIdx.x; w < words; w += blockDim.x)
    out[w] = static_cast<int32_t>(block_words[w]);
}

// One warp per (row, head, token): lanes first quantize the token's channel groups (parameters
// to shared memory), then each lane assembles whole code words.
constexpr int kValueWarps = 4;
constexpr int kMostValueGroups = 64;  // head_dim / group_size

template <class T>
__global__ void value_flush_kernel(ValueFlush a) {
  __shared__ GroupQuant params[kValueWarps][kMostValueGroups];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t token = int64_t{blockIdx.x} * kValueWarps + warp;
  const int64_t total = int64_t{a.n} * a.heads * a.tokens;
  if (token >= total) return;
  const int t = static_cast<int>(token % a.tokens),
            h = static_cast<int>((token / a.tokens) % a.heads),
            i = static_cast<int>(token / (int64_t{a.tokens} * a.heads));
  const int groups = a.dim / a.group_size;
  const int64_t* xs = a.x.stride;
  const T* x = static_cast<const T*>(a.x.data) + i * xs[0] + h * xs[1] + t * xs[2];
  const int64_t* ss = a.scale_stride;
  for (int c = lane; c < groups; c += 32) {
    float lo, hi;
    min_max(x + int64_t{c} * a.group_size * xs[3], xs[3], a.group_size, lo, hi);
    const GroupQuant q = group_quant<T>(lo, hi, a.bits);
    params[warp][c] = q;
    const int64_t at = i * ss[0] + h * ss[1] + t * ss[2] + c;
    static_cast<T*>(a.scale)[at] = from_float<T>(q.scale);
    static_cast<T*>(a.min)[at] = from_float<T>(q.min);
  }
  __syncwarp();
  const int per_word = 32 / a.bits, words = a.dim * a.bits / 32;
  const int64_t* cs = a.codes_stride;
  int32_t* out = a.codes + i * cs[0] + h * cs[1] + t * cs[2];
  for (int w = lane; w < words; w += 32) {
    uint32_t word = 0;
    for (int k = 0; k < per_word; ++k) {
      const int d = value_channel(w * per_word + k, a.dim, a.tile_order);
      word |= quant_code<T>(to_float(x[d * xs[3]]), params[warp][d / a.group_size]) << (k * a.bits);
    }
    out[w] = static_cast<int32_t>(word);
  }
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

bool key_flush_supported(int dim, int group_size, int bits) {
  return int64_t{dim} * group_size * bits / 8 <= 48 * 1024;
}

std::string launch_key_flush(const KeyFlush& args, cudaStream_t stream) {
  if (std::string error = check_bits("kivi key flush", args.bits, args.group_size); !error.empty())
    return error;
  if (!key_flush_supported(args.dim, args.group_size, args.bits))
    return "kivi key flush: a group of " + std::to_string(args.group_size) + " tokens x " +
           std::to_string(args.dim) + " channels at " + std::to_string(args.bits) +
           " bits is over the 48 KB the kernel stages in shared memory";
  if (args.tile_order && (args.dim % 16 != 0 || args.group_size % 32 != 0))
    return "kivi key flush: tile order needs head_dim a multiple of 16 and group_size of 32";
  const int64_t blocks = int64_t{args.n} * args.heads * args.groups;
  if (blocks == 0) return {};
  if (blocks > 0x7fffffff) return "kivi key flush: too many groups in one flush";
  const size_t shared = size_t(args.dim) * args.group_size * args.bits / 8;
  with_dtype(args.dtype, [&](auto tag) {
    key_flush_kernel<decltype(tag)><<<static_cast<unsigned>(blocks), 128, shared, stream>>>(args);
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
  if (args.dim / args.group_size > kMostValueGroups)
    return "kivi value flush: more than " + std::to_string(kMostValueGroups) + " groups per token";
  if (args.tile_order && args.dim % 8 != 0)
    return "kivi value flush: tile order needs head_dim a multiple of 8";
  const int64_t tokens = int64_t{args.n} * args.heads * args.tokens;
  if (tokens == 0) return {};
  const int64_t blocks = (tokens + kValueWarps - 1) / kValueWarps;
  if (blocks > 0x7fffffff) return "kivi value flush: too many tokens in one flush";
  with_dtype(args.dtype, [&](auto tag) {
    value_flush_kernel<decltype(tag)>
        <<<static_cast<unsigned>(blocks), 32 * kValueWarps, 0, stream>>>(args);
  });
  return launch_error("kivi value flush");
}

}  // namespace kivi::kivi_cache::cuda
