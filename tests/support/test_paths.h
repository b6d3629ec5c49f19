// Where tests find their data (set by tests/CMakeLists.txt).
#pragma once

#include <filesystem>

namespace kivi::test {

inline std::filesystem::path fixtures_dir() { return KIVI_TEST_FIXTURES; }
inline std::filesystem::path shared_data_dir() { return KIVI_SHARED_DATA; }
inline std::filesystem::path build_dir() { return KIVI_BUILD_DIR; }
inline std::filesystem::path source_dir() { return KIVI_SOURCE_DIR; }
inline bool shared_data_available() { return std::filesystem::exists(shared_data_dir() / "tokenizers"); }

}  // namespace kivi::test
