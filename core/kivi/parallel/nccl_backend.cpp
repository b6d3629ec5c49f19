#include "kivi/parallel/nccl_backend.h"

#include "kivi/util/error.h"

#ifdef KIVI_CORE_WITH_NCCL
#include <c10/cuda/CUDAGuard.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace kivi {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                    const ParallelConfig& config,
                                                    at::Device device) {
#ifdef KIVI_CORE_WITH_NCCL
  // NCCL's communicator binds to the current device: each rank's own GPU.
  c10::cuda::CUDAGuard guard(device);
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = config.timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, static_cast<int>(config.rank),
                                                     static_cast<int>(config.size), options);
#else
  (void)store;
  (void)config;
  throw Error("tensor parallel on " + device.str() +
              ": this build of kivi has no NCCL (it was built without CUDA or without nccl.h); "
              "run on the CPU, or rebuild where the CUDA toolkit and torch's NCCL are found");
#endif
}

}  // namespace kivi
