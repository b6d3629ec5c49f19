// What the caching allocator holds on a CUDA device, for benchmarks that report peak memory
// and search for the largest batch that fits. On the CPU (or a build without CUDA) every
// figure is 0 and the calls do nothing.
#pragma once

#include <cstdint>

#include <c10/core/Device.h>

namespace kivi {

struct DeviceMemory {
  int64_t allocated = 0;       // bytes in live tensors now
  int64_t peak_allocated = 0;  // most bytes in live tensors since the last reset
  int64_t reserved = 0;        // bytes the allocator holds from the driver now
  int64_t peak_reserved = 0;
  int64_t total = 0;  // the device's memory
};

DeviceMemory device_memory(c10::Device device);

// Starts a new peak (peak_* become the current figures).
void reset_peak_device_memory(c10::Device device);

// Bytes a new allocation on `device` can still get: on a GPU what the driver has free plus what
// the caching allocator holds unused; on the CPU the kernel's MemAvailable; 0 where unknown.
int64_t available_memory(c10::Device device);

// Gives cached, unused blocks back to the driver (after an out-of-memory attempt).
void release_cached_device_memory(c10::Device device);

}  // namespace kivi
