// The one dispatch site of the fused decode attention: runtime sizes become template constants
// here, and the combinations it serves are named in its errors. Also the split-combining kernel.
#include <algorithm>
#include <type_traits>

#include "decode_attention.cuh"
#include "decode_attention_mma.cuh"

namespace kivi::kivi_cache::cuda {
namespace {

constexpr const char* kValidCombinations =
    "the fused kivi decode kernel serves dtype fp16, bf16 or fp32; head_dim 64 or 128; "
    "q_heads / kv_heads from 1 to 8; group_size a multiple of 32 that divides head_dim; "
    "key and value bits 2, 4, 8 or 16";

// Rounds the GQA ratio up to the instantiated register tile.
int rep_tile(int rep) {
  return rep <= 1 ? 1 : rep <= 2 ? 2 : rep <= 4 ? 4 : 8;
}

// Combines the splits of (row b, query head hq): grid (q_heads, rows), block D threads.
template <class T>
__global__ void combine_splits_kernel(DecodeAttention a) {
  const int hq = blockIdx.x, b = blockIdx.y, d = threadIdx.x;
  DecodeWorkspace ws(a.workspace, a.rows, a.q_heads, a.dim, a.splits);
  const int64_t first = (int64_t{b} * a.q_heads + hq) * a.splits;
  float m_all = -INFINITY;
  for (int s = 0; s < a.splits; ++s) m_all = fmaxf(m_all, ws.max[first + s]);
  float total = 0.0f, out = 0.0f;
  if (m_all != -INFINITY) {
    for (int s = 0; s < a.splits; ++s) {
      const float weight = exp2f(ws.max[first + s] - m_all);
      total += ws.sum[first + s] * weight;
      out += ws.acc[(first + s) * a.dim + d] * weight;
    }
  }
  // An idle row (no visible token) outputs zeros, as the other backends do for padded rows.
  static_cast<T*>(a.out)[(int64_t{b} * a.q_heads + hq) * a.dim + d] =
      from_float<T>(total > 0.0f ? out / total : 0.0f);
}

template <class T, int DIM>
void launch_for_rep(const DecodeAttention& a, int tiles_per_split, cudaStream_t stream) {
  switch (rep_tile(a.q_heads / a.kv_heads)) {
    case 1:
      return launch_decode<T, DIM, 1>(a, tiles_per_split, stream);
    case 2:
      return launch_decode<T, DIM, 2>(a, tiles_per_split, stream);
    case 4:
      return launch_decode<T, DIM, 4>(a, tiles_per_split, stream);
    default:
      return launch_decode<T, DIM, 8>(a, tiles_per_split, stream);
  }
}

// Packed bits as the MMA kernel's template constants (a 16-bit side never reads codes).
int bits_tile(int bits) {
  return bits == 16 ? 2 : bits;
}

template <class T, int DIM, int KB>
void launch_mma_for_value_bits(const DecodeAttention& a, int tiles_per_split, cudaStream_t stream) {
  switch (bits_tile(a.v_bits)) {
    case 2:
      return launch_decode_mma<T, DIM, KB, 2>(a, tiles_per_split, stream);
    case 4:
      return launch_decode_mma<T, DIM, KB, 4>(a, tiles_per_split, stream);
    default:
      return launch_decode_mma<T, DIM, KB, 8>(a, tiles_per_split, stream);
  }
}

template <class T, int DIM>
void launch_mma(const DecodeAttention& a, int tiles_per_split, cudaStream_t stream) {
  switch (bits_tile(a.k_bits)) {
    case 2:
      return launch_mma_for_value_bits<T, DIM, 2>(a, tiles_per_split, stream);
    case 4:
      return launch_mma_for_value_bits<T, DIM, 4>(a, tiles_per_split, stream);
    default:
      return launch_mma_for_value_bits<T, DIM, 8>(a, tiles_per_split, stream);
  }
}

}  // namespace

bool decode_supported(DType, int dim, int q_heads, int kv_heads, int group_size, int k_bits,
                      int v_bits, std::string* why) {
  auto bits_ok = [](int bits) { return bits == 2 || bits == 4 || bits == 8 || bits == 16; };
  const bool ok = (dim == 64 || dim == 128) && kv_heads > 0 && q_heads % kv_heads == 0 &&
                  q_heads / kv_heads >= 1 && q_heads / kv_heads <= 8 && group_size > 0 &&
                  group_size % 32 == 0 && dim % group_size == 0 && bits_ok(k_bits) &&
                  bits_ok(v_bits);
  if (!ok && why)
    *why = "head_dim " + std::to_string(dim) + ", " + std::to_string(q_heads) + " query / " +
           std::to_string(kv_heads) + " kv heads, group_size " + std::to_string(group_size) +
           ", bits " + std::to_string(k_bits) + "/" + std::to_string(v_bits) + ": " +
           kValidCombinations;
  return ok;
}

int decode_splits(int rows, int kv_heads, int max_length, int sm_count, int blocks_per_sm,
                  int most_splits) {
  const int tiles = std::max(1, (max_length + kTile - 1) / kTile);
  const int base = std::max(1, rows * kv_heads);
  const int64_t capacity = int64_t{std::max(1, sm_count)} * std::max(1, blocks_per_sm);
  // Blocks run in waves of `capacity`; a block's time is its warps' tiles. The cost of s splits
  // is waves x tiles per warp (plus a little per split for the partials), so a grid that
  // leaves the last wave half empty loses to one that fills it.
  const int most =
      std::max(1, std::min<int>({tiles / kDecodeWarps, int(8 * capacity / base + 1), most_splits}));
  int best = 1;
  double best_cost = 1e300;
  for (int s = 1; s <= most; ++s) {
    const int64_t blocks = int64_t{base} * s;
    const int64_t waves = (blocks + capacity - 1) / capacity;
    const int64_t per_warp = (tiles + int64_t{s} * kDecodeWarps - 1) / (int64_t{s} * kDecodeWarps);
    const double cost = static_cast<double>(waves * per_warp) + 0.02 * s;
    if (cost < best_cost) {
      best_cost = cost;
      best = s;
    }
  }
  return best;
}

int decode_blocks_per_sm(DType dtype, int dim, int k_bits, int v_bits, bool cuda_cores_only) {
  if (dtype == DType::kFloat || cuda_cores_only) return 4;
  int blocks = 1;
  with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) {
      auto pick = [&](auto dim_tag) {
        constexpr int D = decltype(dim_tag)::value;
        auto for_kb = [&](auto kb_tag) {
          constexpr int KB = decltype(kb_tag)::value;
          switch (bits_tile(v_bits)) {
            case 2:
              blocks = decode_mma_occupancy<T, D, KB, 2>();
              break;
            case 4:
              blocks = decode_mma_occupancy<T, D, KB, 4>();
              break;
            default:
              blocks = decode_mma_occupancy<T, D, KB, 8>();
              break;
          }
        };
        switch (bits_tile(k_bits)) {
          case 2:
            for_kb(std::integral_constant<int, 2>{});
            break;
          case 4:
            for_kb(std::integral_constant<int, 4>{});
            break;
          default:
            for_kb(std::integral_constant<int, 8>{});
            break;
        }
      };
      if (dim == 64)
        pick(std::integral_constant<int, 64>{});
      else
        pick(std::integral_constant<int, 128>{});
    }
  });
  return blocks;
}

int64_t decode_workspace_floats(int rows, int q_heads, int dim, int splits) {
  return int64_t{rows} * q_heads * splits * (dim + 2);
}

std::string launch_decode_attention(const DecodeAttention& a, cudaStream_t stream) {
  std::string why;
  if (!decode_supported(a.dtype, a.dim, a.q_heads, a.kv_heads, a.group_size, a.k_bits, a.v_bits,
                        &why))
    return "kivi decode attention: " + why;
  if (a.rows < 1 || a.rows > kMaxDecodeRows || a.splits < 1)
    return "kivi decode attention: " + std::to_string(a.rows) + " rows and " +
           std::to_string(a.splits) + " splits: expected 1 to " + std::to_string(kMaxDecodeRows) +
           " rows per launch and at least one split";
  int max_length = 0;
  for (int b = 0; b < a.rows; ++b) {
    max_length = std::max(max_length, a.length[b]);
    if (a.key_quantized[b] % kTile != 0)
      return "kivi decode attention: row " + std::to_string(b) + " has " +
             std::to_string(a.key_quantized[b]) + " quantized keys, not a multiple of 32";
  }
  const bool combines_itself = a.dtype != DType::kFloat && !a.cuda_cores_only;
  if (combines_itself && a.splits > kMostDecodeSplits)
    return "kivi decode attention: " + std::to_string(a.splits) + " splits: at most " +
           std::to_string(kMostDecodeSplits) + " per launch";
  if (combines_itself && a.splits > 1 && a.counters == nullptr)
    return "kivi decode attention: the tensor-core kernel needs split counters for " +
           std::to_string(a.splits) + " splits";
  const int page = a.table.page_tokens;
  if ((a.table.pages == nullptr && page != kWholeRowPage) || page < a.group_size ||
      page % a.group_size != 0 || (page & (page - 1)) != 0)
    return "kivi decode attention: a block table of " + std::to_string(page) +
           "-token pages: expected page ids (or the identity table, whole rows) and pages of a "
           "power of two of tokens, whole key groups (a multiple of " +
           std::to_string(a.group_size) + ")";
  const int tiles = (max_length + kTile - 1) / kTile;
  const int tiles_per_split = std::max(1, (tiles + a.splits - 1) / a.splits);
  with_dtype(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    bool on_tensor_cores = false;  // fp16/bf16 unless the CUDA-core kernel is asked for
    if constexpr (!std::is_same_v<T, float>) {
      on_tensor_cores = !a.cuda_cores_only;
      if (on_tensor_cores) {
        if (a.dim == 64)
          launch_mma<T, 64>(a, tiles_per_split, stream);
        else
          launch_mma<T, 128>(a, tiles_per_split, stream);
      }
    }
    if (!on_tensor_cores) {
      if (a.dim == 64)
        launch_for_rep<T, 64>(a, tiles_per_split, stream);
      else
        launch_for_rep<T, 128>(a, tiles_per_split, stream);
      combine_splits_kernel<T><<<dim3(a.q_heads, a.rows), a.dim, 0, stream>>>(a);
    }  // (the tensor-core kernel combines its splits itself: decode_merge.cuh)
  });
  return launch_error("kivi decode attention");
}

}  // namespace kivi::kivi_cache::cuda
