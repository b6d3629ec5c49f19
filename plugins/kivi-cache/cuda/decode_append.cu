// A decode step's append to the KIVI cache in one launch (DecodeAppend, kivi_kernels.h): per
// (row, head), one warp quantizes the value that leaves the window (the flush the previous step
// deferred) and writes the new key and value into the windows.
//
// Before this kernel a step cost a value flush kernel and two strided copies per layer. At batch
// 1 the flush alone took 7.4 us per layer on the H200 (Kineto, Llama-3.1-8B shapes, 4K context):
// its lanes read a group's 32 channels one dependent global load after another. Here the token
// is read once, coalesced, into shared memory, and the min/max and packing read it there.
#include <cmath>

#include "quant_math.cuh"

namespace kivi::kivi_cache::cuda {
namespace {

constexpr int kAppendWarps = 4;
constexpr int kMostAppendDim = 256;    // head_dim: 8 channels per lane at most
constexpr int kMostAppendGroups = 64;  // head_dim / group_size

template <class T>
__global__ void decode_append_kernel(DecodeAppend a) {
  __shared__ float token[kAppendWarps][kMostAppendDim];  // the value being quantized, as float
  __shared__ GroupQuant params[kAppendWarps][kMostAppendGroups];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int item = blockIdx.x * kAppendWarps + warp;
  if (item >= a.rows * a.heads) return;
  const int r = item / a.heads, h = item % a.heads;
  const int key_slot = a.key_slot[r], flush = a.flush_position[r];
  const bool quantize = a.bits < 16 && flush >= 0;
  const int per_lane = a.dim / 32;
  const int64_t* vs = a.value_residual_stride;
  T* ring = static_cast<T*>(a.value_residual) + r * vs[0] + h * vs[1];

  // The value leaving the window, read before the new value may take its slot (same thread,
  // same element: program order keeps the load first).
  if (quantize) {
    const T* x = ring + int64_t{flush % a.value_slots} * vs[2];
    for (int i = 0; i < per_lane; ++i) {
      const int d = lane + 32 * i;
      token[warp][d] = to_float(x[d * vs[3]]);
    }
  }
  if (key_slot >= 0) {
    const int64_t *ks = a.k.stride, *vis = a.v.stride, *rs = a.key_residual_stride;
    const T* k = static_cast<const T*>(a.k.data) + r * ks[0] + h * ks[1];
    const T* v = static_cast<const T*>(a.v.data) + r * vis[0] + h * vis[1];
    T* key_out = static_cast<T*>(a.key_residual) + r * rs[0] + h * rs[1] + key_slot * rs[2];
    T* value_out = ring + int64_t{a.value_slot[r]} * vs[2];
    for (int i = 0; i < per_lane; ++i) {
      const int d = lane + 32 * i;
      key_out[d * rs[3]] = k[d * ks[3]];
      value_out[d * vs[3]] = v[d * vis[3]];
    }
  }
  if (!quantize) return;
  __syncwarp();

  // Per channel group: min, max and the quantizer's parameters (as value_flush_kernel).
  const int groups = a.dim / a.group_size;
  const int64_t* ss = a.value_scale_stride;
  const int64_t at = r * ss[0] + h * ss[1] + int64_t{flush} * ss[2];
  for (int c = lane; c < groups; c += 32) {
    float lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < a.group_size; ++j) {
      const float x = token[warp][c * a.group_size + j];
      lo = fminf(lo, x);
      hi = fmaxf(hi, x);
    }
    const GroupQuant q = group_quant<T>(lo, hi, a.bits);
    params[warp][c] = q;
    static_cast<T*>(a.value_scale)[at + c] = from_float<T>(q.scale);
    static_cast<T*>(a.value_min)[at + c] = from_float<T>(q.min);
  }
  __syncwarp();
  const int per_word = 32 / a.bits, words = a.dim * a.bits / 32;
  const int64_t* cs = a.value_codes_stride;
  int32_t* out = a.value_codes + r * cs[0] + h * cs[1] + int64_t{flush} * cs[2];
  for (int w = lane; w < words; w += 32) {
    uint32_t word = 0;
    for (int j = 0; j < per_word; ++j) {
      const int d = value_channel(w * per_word + j, a.dim, a.tile_order);
      word |= quant_code<T>(token[warp][d], params[warp][d / a.group_size]) << (j * a.bits);
    }
    out[w] = static_cast<int32_t>(word);
  }
}

}  // namespace

bool decode_append_supported(int dim, int group_size, int bits) {
  if (dim <= 0 || dim % 32 != 0 || dim > kMostAppendDim) return false;
  if (bits >= 16) return true;
  return (bits == 2 || bits == 4 || bits == 8) && group_size > 0 && dim % group_size == 0 &&
         group_size % (32 / bits) == 0 && dim / group_size <= kMostAppendGroups;
}

std::string launch_decode_append(const DecodeAppend& args, cudaStream_t stream) {
  if (!decode_append_supported(args.dim, args.group_size, args.bits))
    return "kivi decode append: head_dim " + std::to_string(args.dim) + ", group_size " +
           std::to_string(args.group_size) + " at " + std::to_string(args.bits) +
           " bits: expected head_dim a multiple of 32 up to 256 and whole groups of whole words";
  if (args.rows < 0 || args.rows > kMaxAppendRows)
    return "kivi decode append: " + std::to_string(args.rows) + " rows, expected at most " +
           std::to_string(kMaxAppendRows);
  const int items = args.rows * args.heads;
  if (items == 0) return {};
  const unsigned blocks = static_cast<unsigned>((items + kAppendWarps - 1) / kAppendWarps);
  with_dtype(args.dtype, [&](auto tag) {
    decode_append_kernel<decltype(tag)><<<blocks, 32 * kAppendWarps, 0, stream>>>(args);
  });
  return launch_error("kivi decode append");
}

}  // namespace kivi::kivi_cache::cuda
