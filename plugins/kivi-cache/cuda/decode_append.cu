// A decode step's append to the KIVI cache in one launch (DecodeAppend, kivi_kernels.h): per
// (row, head), one warp quantizes the value that leaves the window (the flush the previous step
// deferred) and writes the new key and value into the windows.
//
// Before this kernel a step cost a value flush kernel and two strided copies per layer. At batch
// 1 the flush alone took 7.4 us per layer on the H200 (Kineto, Llama-3.1-8B shapes, 4K context):
// its lanes read a group's 32 channels one dependent global load after another, and 8 lanes
// packed 16 codes each. Here every load goes out at once (one round trip), groups reduce across
// lanes, and all 32 lanes quantize the row's codes.
#include <cmath>

#include "quant_math.cuh"

namespace kivi::kivi_cache::cuda {
namespace {

constexpr int kAppendWarps = 4;
constexpr int kMostAppendDim = 256;                     // head_dim: 8 channels per lane at most
constexpr int kMostAppendGroups = kMostAppendDim / 32;  // head_dim / group_size

template <class T>
__global__ void decode_append_kernel(DecodeAppend a) {
  constexpr int kMostPerLane = kMostAppendDim / 32;
  __shared__ float token[kAppendWarps][kMostAppendDim];  // the value being quantized, as float
  __shared__ GroupQuant params[kAppendWarps][kMostAppendGroups];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int item = blockIdx.x * kAppendWarps + warp;
  if (item >= a.rows * a.heads) return;
  const int r = item / a.heads, h = item % a.heads;
  const int key_slot = a.key_slot[r], flush = a.flush_position[r];
  const bool quantize = a.bits < 16 && flush >= 0, append = key_slot >= 0;
  const int per_lane = a.dim / 32;  // channels lane + 32 i of the row: a power of two
  const int64_t *vs = a.value_residual_stride, *ks = a.k.stride, *vis = a.v.stride,
                *rs = a.key_residual_stride;
  T* ring = static_cast<T*>(a.value_residual) + r * vs[0] + h * vs[1];
  const T* leaving = ring + int64_t{flush % a.value_slots} * vs[2];
  const T* k = static_cast<const T*>(a.k.data) + r * ks[0] + h * ks[1];
  const T* v = static_cast<const T*>(a.v.data) + r * vis[0] + h * vis[1];

  // Every load first, then every store: one round trip. The value leaving the window is read
  // before the new value may take its slot (same thread, same element: program order keeps the
  // load first). (Loads in a loop with a store in between took a round trip each: 9.3 us.)
  float x[kMostPerLane];
  T new_k[kMostPerLane], new_v[kMostPerLane];
#pragma unroll
  for (int i = 0; i < kMostPerLane; ++i) {
    const int d = lane + 32 * i;
    if (i < per_lane && quantize) x[i] = to_float(leaving[d * vs[3]]);
    if (i < per_lane && append) {
      new_k[i] = k[d * ks[3]];
      new_v[i] = v[d * vis[3]];
    }
  }
  T* key_out = static_cast<T*>(a.key_residual) + r * rs[0] + h * rs[1] + int64_t{key_slot} * rs[2];
  T* value_out = ring + int64_t{a.value_slot[r]} * vs[2];
#pragma unroll
  for (int i = 0; i < kMostPerLane; ++i) {
    const int d = lane + 32 * i;
    if (i < per_lane && append) {
      key_out[d * rs[3]] = new_k[i];
      value_out[d * vs[3]] = new_v[i];
    }
    if (i < per_lane && quantize) token[warp][d] = x[i];
  }
  if (!quantize) return;
  __syncwarp();

  // Per channel group: min, max and the quantizer's parameters (as value_flush_kernel). A group
  // is whole rows i of channels lane + 32 i (G a multiple of 32): a reduction across lanes.
  const int groups = a.dim / a.group_size, per_group = a.group_size / 32;
  float lo_i[kMostPerLane], hi_i[kMostPerLane];
#pragma unroll
  for (int i = 0; i < kMostPerLane; ++i) lo_i[i] = hi_i[i] = i < per_lane ? x[i] : 0.0f;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2)
#pragma unroll
    for (int i = 0; i < kMostPerLane; ++i) {
      lo_i[i] = fminf(lo_i[i], __shfl_xor_sync(0xffffffffu, lo_i[i], offset));
      hi_i[i] = fmaxf(hi_i[i], __shfl_xor_sync(0xffffffffu, hi_i[i], offset));
    }
  float lo = INFINITY, hi = -INFINITY;  // of group `lane`
#pragma unroll
  for (int i = 0; i < kMostPerLane; ++i)
    if (i < per_lane && i / per_group == lane) {
      lo = fminf(lo, lo_i[i]);
      hi = fmaxf(hi, hi_i[i]);
    }
  const int64_t* ss = a.value_scale_stride;
  const int64_t at =
      int64_t{a.flush_index[r]} * ss[0] + h * ss[1] + int64_t{a.flush_slot[r]} * ss[2];
  if (lane < groups) {
    const GroupQuant q = group_quant<T>(lo, hi, a.bits);
    params[warp][lane] = q;
    static_cast<T*>(a.value_scale)[at + lane] = from_float<T>(q.scale);
    static_cast<T*>(a.value_min)[at + lane] = from_float<T>(q.min);
  }
  __syncwarp();

  // Codes j = per_lane * lane + [0, per_lane) of the row, by every lane; lanes that share a word
  // OR their parts together (per_lane and the codes per word are powers of two).
  const int per_word = 32 / a.bits;
  const int64_t* cs = a.value_codes_stride;
  int32_t* out = a.value_codes + int64_t{a.flush_index[r]} * cs[0] + h * cs[1] +
                 int64_t{a.flush_slot[r]} * cs[2];
  uint32_t part[kMostPerLane];  // per word the lane's codes touch
#pragma unroll
  for (int i = 0; i < kMostPerLane; ++i) part[i] = 0;
#pragma unroll
  for (int i = 0; i < kMostPerLane; ++i) {
    if (i >= per_lane) continue;
    const int j = per_lane * lane + i, d = value_channel(j, a.dim, a.tile_order);
    const uint32_t code = quant_code<T>(token[warp][d], params[warp][d / a.group_size]);
    const int word = i / per_word;  // of the lane's words (0 unless per_lane > per_word)
#pragma unroll
    for (int w = 0; w < kMostPerLane; ++w)  // (a constant index keeps part in registers)
      if (w == word) part[w] |= code << ((j % per_word) * a.bits);
  }
  if (per_lane <= per_word) {
    const int lanes_per_word = per_word / per_lane;
    uint32_t word = part[0];
    for (int offset = 1; offset < lanes_per_word; offset *= 2)
      word |= __shfl_xor_sync(0xffffffffu, word, offset);
    if (lane % lanes_per_word == 0) out[lane / lanes_per_word] = static_cast<int32_t>(word);
  } else {
    const int words_per_lane = per_lane / per_word;
#pragma unroll
    for (int w = 0; w < kMostPerLane; ++w)
      if (w < words_per_lane) out[lane * words_per_lane + w] = static_cast<int32_t>(part[w]);
  }
}

}  // namespace

bool decode_append_supported(int dim, int group_size, int bits) {
  // 32, 64, 128 or 256 channels: a power of two per lane
  if (dim != 32 && dim != 64 && dim != 128 && dim != 256) return false;
  if (bits >= 16) return true;
  // Groups of whole rows of 32 channels (other group sizes take the flush kernel and copies).
  return (bits == 2 || bits == 4 || bits == 8) && group_size > 0 && group_size % 32 == 0 &&
         dim % group_size == 0;
}

std::string launch_decode_append(const DecodeAppend& args, cudaStream_t stream) {
  if (!decode_append_supported(args.dim, args.group_size, args.bits))
    return "kivi decode append: head_dim " + std::to_string(args.dim) + ", group_size " +
           std::to_string(args.group_size) + " at " + std::to_string(args.bits) +
           " bits: expected head_dim 32, 64, 128 or 256 and groups of a multiple of 32 channels";
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
