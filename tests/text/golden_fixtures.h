// Loading the golden fixtures of tools/fixtures/make_tokenizer_fixtures.py and the shared
// tokenizers they were made from.
#pragma once

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>
#include "kivi_catch.h"

#include "kivi/text/tokenizer.h"
#include "test_paths.h"
#include "test_skip.h"

namespace kivi::test {

inline nlohmann::json read_fixture(const std::string& name) {
  const auto path = fixtures_dir() / "tokenizers" / name;
  std::ifstream in(path);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

// The text of a fixture case: "text", or the raw bytes of "bytes_hex" (invalid UTF-8).
inline std::string case_text(const nlohmann::json& c) {
  if (c.contains("text")) return c["text"].get<std::string>();
  const auto hex = c["bytes_hex"].get<std::string>();
  std::string bytes;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return bytes;
}

// The shared tokenizer `name` (llama2, llama3, llama3.1, qwen2.5), loaded once; null when the
// shared data is absent (a clone without ../shared, or the GPU machine, which carries only some
// tokenizers: tools/gpu/gather-deps.sh), and the running test case is marked skipped.
inline const kivi::text::Tokenizer* shared_tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<kivi::text::Tokenizer>> loaded;
  const auto dir = shared_data_dir() / "tokenizers" / name;
  if (!std::filesystem::exists(dir / "tokenizer.json")) {
    skip_without_shared_data("the " + name + " tokenizer " + (dir / "tokenizer.json").string());
    return nullptr;
  }
  auto& slot = loaded[name];
  if (!slot) {
    slot = std::make_unique<kivi::text::Tokenizer>(
        kivi::text::Tokenizer::from_file(dir / "tokenizer.json", dir / "tokenizer_config.json"));
  }
  return slot.get();
}

}  // namespace kivi::test
