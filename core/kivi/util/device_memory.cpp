#include "kivi/util/device_memory.h"

#ifdef KIVI_CORE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#endif

namespace kivi {

#ifdef KIVI_CORE_WITH_CUDA

namespace {
namespace alloc = c10::cuda::CUDACachingAllocator;
constexpr size_t kAggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
}  // namespace

DeviceMemory device_memory(c10::Device device) {
  DeviceMemory m;
  if (!device.is_cuda()) return m;
  const c10::DeviceIndex index = device.has_index() ? device.index() : 0;
  const auto stats = alloc::getDeviceStats(index);
  m.allocated = stats.allocated_bytes[kAggregate].current;
  m.peak_allocated = stats.allocated_bytes[kAggregate].peak;
  m.reserved = stats.reserved_bytes[kAggregate].current;
  m.peak_reserved = stats.reserved_bytes[kAggregate].peak;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, index) == cudaSuccess)
    m.total = static_cast<int64_t>(prop.totalGlobalMem);
  return m;
}

void reset_peak_device_memory(c10::Device device) {
  if (device.is_cuda()) alloc::resetPeakStats(device.has_index() ? device.index() : 0);
}

void release_cached_device_memory(c10::Device device) {
  if (device.is_cuda()) alloc::emptyCache();
}

#else

DeviceMemory device_memory(c10::Device) {
  return {};
}
void reset_peak_device_memory(c10::Device) {}
void release_cached_device_memory(c10::Device) {}

#endif

}  // namespace kivi
