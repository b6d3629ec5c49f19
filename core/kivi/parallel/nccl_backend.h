// The NCCL process group for CUDA tensors (nccl_backend.cpp, built where CUDA and NCCL's header
// are found; elsewhere a stub that says this build has no NCCL).
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "kivi/parallel/tensor_parallel.h"

namespace kivi {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                    const ParallelConfig& config,
                                                    at::Device device);

}  // namespace kivi
