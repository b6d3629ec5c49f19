// The fuzzer's bytes as a file: the readers under test take paths and map them. An in-memory
// file (memfd) rewritten for every input, reached as /proc/self/fd/N, costs no disk I/O.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace kivi::fuzz {

inline std::string as_file(const uint8_t* data, size_t size) {
  static const int fd = ::memfd_create("kivi-fuzz-input", 0);
  if (fd < 0 || ::ftruncate(fd, 0) != 0) std::abort();
  for (size_t done = 0; done < size;) {
    const ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (n <= 0) std::abort();
    done += static_cast<size_t>(n);
  }
  return "/proc/self/fd/" + std::to_string(fd);
}

}  // namespace kivi::fuzz
