// Shared by the GGUF tests: fixture paths, the SmolLM2 file (when fetched) and a byte-level
// GGUF writer for malformed files. (The registry and temp folders come from
// tests/model/model_test_support.h.)
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace kivi::test {

std::filesystem::path gguf_fixture(const std::string& file);  // tests/fixtures/gguf/<file>
// models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (tools/fetch-smollm2.sh); may be absent.
std::filesystem::path smollm2_path();
bool smollm2_available();

// Little-endian GGUF bytes, field by field, so tests can write files that lie.
struct GgufBytes {
  std::vector<uint8_t> bytes;
  template <typename T>
  GgufBytes& put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(T));
    return *this;
  }
  GgufBytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  // A key with a string (type 8) or uint32 (type 4) value.
  GgufBytes& kv_string(const std::string& key, const std::string& value) {
    return str(key).put<uint32_t>(8).str(value);
  }
  GgufBytes& kv_u32(const std::string& key, uint32_t value) {
    return str(key).put<uint32_t>(4).put<uint32_t>(value);
  }
  // A tensor table entry; `ne` fastest-varying first, as GGUF stores it.
  GgufBytes& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type,
                    uint64_t offset) {
    str(name).put<uint32_t>(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) put<uint64_t>(d);
    return put<uint32_t>(type).put<uint64_t>(offset);
  }
  GgufBytes& pad_to(size_t alignment) {
    while (bytes.size() % alignment) bytes.push_back(0);
    return *this;
  }
  void write(const std::filesystem::path& file) const;
};

// "GGUF", version 3, the counts.
GgufBytes gguf_header(uint64_t tensors, uint64_t kvs);

}  // namespace kivi::test
