// Instantiations of the fused decode kernel for __half storage (one file per type, so they
// compile in parallel).
#include "decode_attention.cuh"

namespace kivi::kivi_cache::cuda {

#define KIVI_INSTANTIATE_DECODE(DIM, REP) \
  template void launch_decode<__half, DIM, REP>(const DecodeAttention&, int, cudaStream_t);
KIVI_INSTANTIATE_DECODE(64, 1)
KIVI_INSTANTIATE_DECODE(64, 2)
KIVI_INSTANTIATE_DECODE(64, 4)
KIVI_INSTANTIATE_DECODE(64, 8)
KIVI_INSTANTIATE_DECODE(128, 1)
KIVI_INSTANTIATE_DECODE(128, 2)
KIVI_INSTANTIATE_DECODE(128, 4)
KIVI_INSTANTIATE_DECODE(128, 8)

}  // namespace kivi::kivi_cache::cuda
