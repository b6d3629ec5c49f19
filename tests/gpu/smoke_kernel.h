#pragma once

#include <string>

namespace kivi::test {
// Runs y = a * x + y on device pointers; returns "" or the CUDA error.
std::string saxpy_on_device(int n, float a, const float* x, float* y);
}  // namespace kivi::test
