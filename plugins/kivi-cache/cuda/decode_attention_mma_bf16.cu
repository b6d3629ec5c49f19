// Instantiations of the tensor-core decode kernel for __nv_bfloat16 storage: head_dim 64 and 128 x
// key bits x value bits (2, 4, 8; a 16-bit side uses any, its packed branch never runs).
#include "decode_attention_mma.cuh"

namespace kivi::kivi_cache::cuda {

// (clang-format alternates between layouts of these macros: they keep their own)
// clang-format off
#define KIVI_INSTANTIATE_MMA(DIM, KB, VB)                                                     \
  template void launch_decode_mma<__nv_bfloat16, DIM, KB, VB>(const DecodeAttention&, int, cudaStream_t); \
  template int decode_mma_occupancy<__nv_bfloat16, DIM, KB, VB>();
#define KIVI_INSTANTIATE_MMA_DIM(DIM)                                                          \
  KIVI_INSTANTIATE_MMA(DIM, 2, 2) KIVI_INSTANTIATE_MMA(DIM, 2, 4) KIVI_INSTANTIATE_MMA(DIM, 2, 8) \
  KIVI_INSTANTIATE_MMA(DIM, 4, 2) KIVI_INSTANTIATE_MMA(DIM, 4, 4) KIVI_INSTANTIATE_MMA(DIM, 4, 8) \
  KIVI_INSTANTIATE_MMA(DIM, 8, 2) KIVI_INSTANTIATE_MMA(DIM, 8, 4) KIVI_INSTANTIATE_MMA(DIM, 8, 8)
// clang-format on
KIVI_INSTANTIATE_MMA_DIM(64)
KIVI_INSTANTIATE_MMA_DIM(128)

}  // namespace kivi::kivi_cache::cuda
