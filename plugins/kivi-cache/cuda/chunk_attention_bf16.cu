// Instantiations of the fused chunk attention for __nv_bfloat16 storage (bf16): head_dim 64 and 128
// x key bits x value bits (2, 4, 8; a 16-bit side uses any, its packed branch never runs).
#include "chunk_attention.cuh"

namespace kivi::kivi_cache::cuda {

// clang-format off
#define KIVI_INSTANTIATE_CHUNK(DIM, KB, VB)                                                  \
  template void launch_chunk<__nv_bfloat16, DIM, KB, VB>(const ChunkAttention&, cudaStream_t); \
  template int chunk_occupancy<__nv_bfloat16, DIM, KB, VB>();
#define KIVI_INSTANTIATE_CHUNK_DIM(DIM)                                                            \
  KIVI_INSTANTIATE_CHUNK(DIM, 2, 2) KIVI_INSTANTIATE_CHUNK(DIM, 2, 4) KIVI_INSTANTIATE_CHUNK(DIM, 2, 8) \
  KIVI_INSTANTIATE_CHUNK(DIM, 4, 2) KIVI_INSTANTIATE_CHUNK(DIM, 4, 4) KIVI_INSTANTIATE_CHUNK(DIM, 4, 8) \
  KIVI_INSTANTIATE_CHUNK(DIM, 8, 2) KIVI_INSTANTIATE_CHUNK(DIM, 8, 4) KIVI_INSTANTIATE_CHUNK(DIM, 8, 8)
// clang-format on
KIVI_INSTANTIATE_CHUNK_DIM(64)
KIVI_INSTANTIATE_CHUNK_DIM(128)

}  // namespace kivi::kivi_cache::cuda
