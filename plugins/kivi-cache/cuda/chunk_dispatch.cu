// The one dispatch site of the fused chunk attention (chunk_attention.cuh): runtime sizes become
// template constants here, the splits are chosen, and the kernel that merges split partials.
#include <algorithm>
#include <type_traits>

#include "chunk_attention.cuh"

namespace kivi::kivi_cache::cuda {
namespace {

constexpr const char* kValidCombinations =
    "the fused kivi chunk kernel serves dtype fp16 or bf16; head_dim 64 or 128; q_heads / "
    "kv_heads from 1 to 8; group_size a multiple of 32 that divides head_dim; key and value "
    "bits 2, 4, 8 or 16";

// Packed bits as template constants (a 16-bit side never reads codes: its quantized count is 0).
int bits_tile(int bits) {
  return bits == 16 ? 2 : bits;
}

// Calls fn(std::integral_constant<int, bits>) for bits 2, 4 or 8.
template <class Fn>
void with_bits(int bits, Fn&& fn) {
  switch (bits_tile(bits)) {
    case 2:
      return fn(std::integral_constant<int, 2>{});
    case 4:
      return fn(std::integral_constant<int, 4>{});
    default:
      return fn(std::integral_constant<int, 8>{});
  }
}

// Calls fn(T{}, std::integral_constant<int, D>{}, KB, VB constants) for the launch's settings.
template <class Fn>
void with_kernel(DType dtype, int dim, int k_bits, int v_bits, Fn&& fn) {
  with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) {
      auto for_dim = [&](auto dim_tag) {
        with_bits(k_bits,
                  [&](auto kb) { with_bits(v_bits, [&](auto vb) { fn(tag, dim_tag, kb, vb); }); });
      };
      if (dim == 64)
        for_dim(std::integral_constant<int, 64>{});
      else
        for_dim(std::integral_constant<int, 128>{});
    }
  });
}

// Merges the splits of each query row: one warp per partial row (D / 32 channels per lane).
// Rows past a row's count (padding) get zeros.
template <class T, int DIM>
__global__ void merge_chunk_splits_kernel(ChunkAttention a, int query_tiles) {
  constexpr int C = DIM / 32;
  const int lane = threadIdx.x % 32;
  const int64_t per_pair = int64_t{query_tiles} * kChunkQueryRows;
  const ChunkWorkspace ws(a.workspace, int64_t{a.rows} * a.kv_heads * per_pair, DIM, a.splits);
  const int64_t pr = int64_t{blockIdx.x} * (blockDim.x / 32) + threadIdx.x / 32;
  if (pr >= ws.rows) return;
  const int pair = static_cast<int>(pr / per_pair), R = static_cast<int>(pr % per_pair);
  const int b = pair / a.kv_heads, h = pair % a.kv_heads, rep = a.q_heads / a.kv_heads;
  if (R >= a.tokens * rep) return;
  const int i = R / rep, j = R % rep;
  float acc[C], total = 0.0f;
#pragma unroll
  for (int e = 0; e < C; ++e) acc[e] = 0.0f;
  if (i < a.count[b]) {
    float m_all = -INFINITY;
    for (int s = 0; s < a.splits; ++s) m_all = fmaxf(m_all, ws.max[s * ws.rows + pr]);
    for (int s = 0; s < a.splits && m_all != -INFINITY; ++s) {
      const float m = ws.max[s * ws.rows + pr];
      if (m == -INFINITY) continue;  // a split with no visible position (or no tiles)
      const float weight = exp2f(m - m_all);
      total += weight * ws.sum[s * ws.rows + pr];
      const float* x = ws.acc + (s * ws.rows + pr) * DIM + lane * C;
#pragma unroll
      for (int e = 0; e < C; ++e) acc[e] += weight * x[e];
    }
  }
  T* dst = static_cast<T*>(a.out) + ((int64_t{b} * a.q_heads + h * rep + j) * a.tokens + i) * DIM +
           lane * C;
#pragma unroll
  for (int e = 0; e < C; ++e) dst[e] = from_float<T>(total > 0.0f ? acc[e] / total : 0.0f);
}

}  // namespace

bool chunk_supported(DType dtype, int dim, int q_heads, int kv_heads, int group_size, int k_bits,
                     int v_bits, std::string* why) {
  auto bits_ok = [](int bits) { return bits == 2 || bits == 4 || bits == 8 || bits == 16; };
  const bool ok = dtype != DType::kFloat && (dim == 64 || dim == 128) && kv_heads > 0 &&
                  q_heads % kv_heads == 0 && q_heads / kv_heads >= 1 && q_heads / kv_heads <= 8 &&
                  group_size > 0 && group_size % 32 == 0 && dim % group_size == 0 &&
                  bits_ok(k_bits) && bits_ok(v_bits);
  if (!ok && why)
    *why = std::string(dtype == DType::kFloat  ? "fp32"
                       : dtype == DType::kHalf ? "fp16"
                                               : "bf16") +
           ", head_dim " + std::to_string(dim) + ", " + std::to_string(q_heads) + " query / " +
           std::to_string(kv_heads) + " kv heads, group_size " + std::to_string(group_size) +
           ", bits " + std::to_string(k_bits) + "/" + std::to_string(v_bits) + ": " +
           kValidCombinations;
  return ok;
}

int chunk_blocks_per_sm(DType dtype, int dim, int k_bits, int v_bits) {
  int blocks = 1;
  with_kernel(dtype, dim, k_bits, v_bits, [&](auto tag, auto d, auto kb, auto vb) {
    blocks = chunk_occupancy<decltype(tag), d.value, kb.value, vb.value>();
  });
  return blocks;
}

void choose_chunk_splits(ChunkAttention& a, int sm_count, int blocks_per_sm) {
  const int rep = a.kv_heads > 0 ? a.q_heads / a.kv_heads : 1;
  int tiles = 1;
  int64_t blocks = 0;  // blocks with queries (the others return at once)
  for (int b = 0; b < a.rows; ++b) {
    if (a.count[b] <= 0) continue;
    tiles = std::max(tiles, (a.first[b] + a.count[b] + kChunkTile - 1) / kChunkTile);
    blocks += int64_t{a.kv_heads} * ((a.count[b] * rep + kChunkQueryRows - 1) / kChunkQueryRows);
  }
  blocks = std::max<int64_t>(blocks, 1);
  const int64_t capacity = int64_t{std::max(1, sm_count)} * std::max(1, blocks_per_sm);
  // Blocks run in waves of `capacity`; a block's time is its tiles plus a fixed cost of about
  // kChunkStages + 2 tiles (the queries' load, the pipeline's fill, the epilogue). Measured on
  // the H200 (8K stored, 256-token chunk, 128 blocks of 2 per SM): 33 splits of 8 tiles, 16
  // waves, took 4x longer than the one wave the fixed cost now picks. At least 8 tiles a split.
  constexpr double kFixedTiles = kChunkStages + 2;
  const int most = std::max(1, std::min(tiles / 8, 64));
  int best = 1;
  double best_cost = 1e300;
  for (int s = 1; s <= most; ++s) {
    const int64_t waves = (blocks * s + capacity - 1) / capacity;
    const int64_t per_split = (tiles + s - 1) / s;
    // (+1 tile for the merge's launch and the partials when split)
    const double cost =
        static_cast<double>(waves) * (static_cast<double>(per_split) + kFixedTiles) +
        (s > 1 ? 1.0 : 0.0);
    if (cost < best_cost) {
      best_cost = cost;
      best = s;
    }
  }
  a.tiles_per_split = (tiles + best - 1) / best;
  a.splits = (tiles + a.tiles_per_split - 1) / a.tiles_per_split;
}

int64_t chunk_workspace_floats(const ChunkAttention& a) {
  if (a.splits <= 1) return 0;
  const int64_t rows = int64_t{a.rows} * a.kv_heads * chunk_query_tiles(a) * kChunkQueryRows;
  return a.splits * rows * (a.dim + 2);
}

std::string launch_chunk_attention(const ChunkAttention& a, cudaStream_t stream) {
  std::string why;
  if (!chunk_supported(a.dtype, a.dim, a.q_heads, a.kv_heads, a.group_size, a.k_bits, a.v_bits,
                       &why))
    return "kivi chunk attention: " + why;
  if (a.rows < 1 || a.rows > kMaxChunkRows || a.tokens < 1 || a.splits < 1 || a.tiles_per_split < 1)
    return "kivi chunk attention: " + std::to_string(a.rows) + " rows, " +
           std::to_string(a.tokens) + " tokens, " + std::to_string(a.splits) +
           " splits: expected 1 to " + std::to_string(kMaxChunkRows) +
           " rows per launch, a chunk and at least one split";
  if (a.splits > 1 && a.workspace == nullptr)
    return "kivi chunk attention: " + std::to_string(a.splits) + " splits need a workspace";
  const int page = a.table.page_tokens;
  if ((a.table.pages == nullptr && page != kWholeRowPage) || page < a.group_size ||
      page % a.group_size != 0 || (page & (page - 1)) != 0)
    return "kivi chunk attention: a block table with pages of a power of two of tokens, whole "
           "groups (" +
           std::to_string(page) + " tokens per page, group_size " + std::to_string(a.group_size) +
           "), or the identity table";
  for (int b = 0; b < a.rows; ++b)
    if (a.key_quantized[b] % kChunkTile != 0)
      return "kivi chunk attention: row " + std::to_string(b) + " has " +
             std::to_string(a.key_quantized[b]) + " quantized keys, not a multiple of 32";
  with_kernel(a.dtype, a.dim, a.k_bits, a.v_bits, [&](auto tag, auto d, auto kb, auto vb) {
    using T = decltype(tag);
    constexpr int D = decltype(d)::value;
    launch_chunk<T, D, kb.value, vb.value>(a, stream);
    if (a.splits > 1) {
      const int query_tiles = chunk_query_tiles(a);
      const int64_t rows = int64_t{a.rows} * a.kv_heads * query_tiles * kChunkQueryRows;
      merge_chunk_splits_kernel<T, D><<<unsigned((rows + 3) / 4), 128, 0, stream>>>(a, query_tiles);
    }
  });
  return launch_error("kivi chunk attention");
}

}  // namespace kivi::kivi_cache::cuda
