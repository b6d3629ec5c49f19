#include "kivi/util/device_memory.h"

#include <fstream>
#include <sstream>
#include <string>

#ifdef KIVI_CORE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#endif

namespace kivi {
namespace {

// MemAvailable of /proc/meminfo in bytes; 0 when it cannot be read.
int64_t host_available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    int64_t kib = 0;
    if (fields >> key >> kib && key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

}  // namespace

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

int64_t available_memory(c10::Device device) {
  if (device.is_cpu()) return host_available_memory();
  if (!device.is_cuda()) return 0;
  int current = 0;
  size_t free = 0, total = 0;
  if (cudaGetDevice(&current) != cudaSuccess) return 0;
  const int index = device.has_index() ? device.index() : 0;
  if (index != current && cudaSetDevice(index) != cudaSuccess) return 0;
  const bool ok = cudaMemGetInfo(&free, &total) == cudaSuccess;
  if (index != current) cudaSetDevice(current);
  if (!ok) return 0;
  const DeviceMemory m = device_memory(device);
  return static_cast<int64_t>(free) + (m.reserved - m.allocated);
}

#else

DeviceMemory device_memory(c10::Device) {
  return {};
}
void reset_peak_device_memory(c10::Device) {}
void release_cached_device_memory(c10::Device) {}
int64_t available_memory(c10::Device device) {
  return device.is_cpu() ? host_available_memory() : 0;
}

#endif

}  // namespace kivi
