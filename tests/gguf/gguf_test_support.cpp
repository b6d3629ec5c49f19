#include "gguf_test_support.h"

#include <fstream>

#include "test_paths.h"

namespace kivi::test {
namespace fs = std::filesystem;

fs::path gguf_fixture(const std::string& file) {
  return fixtures_dir() / "gguf" / file;
}
fs::path smollm2_path() {
  return source_dir() / "models" / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf";
}
bool smollm2_available() {
  return fs::is_regular_file(smollm2_path());
}

void GgufBytes::write(const fs::path& file) const {
  std::ofstream out(file, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

GgufBytes gguf_header(uint64_t tensors, uint64_t kvs) {
  GgufBytes b;
  b.bytes = {'G', 'G', 'U', 'F'};
  return b.put<uint32_t>(3).put<uint64_t>(tensors).put<uint64_t>(kvs);
}

}  // namespace kivi::test
