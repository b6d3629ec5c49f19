// Seconds since a steady-clock point: what the modes compute their rates from.
#pragma once

#include <chrono>

namespace kivi::host {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace kivi::host
