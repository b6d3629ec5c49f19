// A tiny kernel of our own, to prove that kivi's CUDA build really runs on the device.
#include <cuda_runtime.h>

#include "smoke_kernel.h"

namespace kivi::test {
namespace {

// y[i] = a * x[i] + y[i]
__global__ void saxpy_kernel(int n, float a, const float* x, float* y) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

}  // namespace

std::string saxpy_on_device(int n, float a, const float* x, float* y) {
  constexpr int kThreads = 256;
  saxpy_kernel<<<(n + kThreads - 1) / kThreads, kThreads>>>(n, a, x, y);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return cudaGetErrorString(e);
  if (cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess) return cudaGetErrorString(e);
  return "";
}

}  // namespace kivi::test
