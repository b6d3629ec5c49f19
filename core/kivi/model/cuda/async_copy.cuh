// Asynchronous global -> shared memory copies (cp.async, sm_80+), shared by the plugins' CUDA
// kernels: 16 bytes per call that skip the registers, so a thread can have many in flight; a
// commit closes a group, a wait lets at most kPending groups remain in flight.
#pragma once

namespace kivi::cuda_copy {

__device__ __forceinline__ void copy_async16(void* shared_dst, const void* global_src) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(shared_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(global_src));
}
__device__ __forceinline__ void copy_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int kPending>
__device__ __forceinline__ void copy_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

}  // namespace kivi::cuda_copy
