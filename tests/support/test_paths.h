// Where tests find their data (set by tests/CMakeLists.txt).
#pragma once

#include <filesystem>

namespace kivi::test {

inline std::filesystem::path fixtures_dir() {
  return KIVI_TEST_FIXTURES;
}
inline std::filesystem::path shared_data_dir() {
  return KIVI_SHARED_DATA;
}
// data/ at the repository root: the public-domain texts the configs use (data/README.md).
inline std::filesystem::path data_dir() {
  return KIVI_DATA_DIR;
}
inline std::filesystem::path build_dir() {
  return KIVI_BUILD_DIR;
}
inline std::filesystem::path source_dir() {
  return KIVI_SOURCE_DIR;
}

}  // namespace kivi::test
