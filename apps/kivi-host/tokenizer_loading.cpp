#include "tokenizer_loading.h"

#include <nlohmann/json.hpp>

#include "kivi/model/gguf_tokenizer.h"
#include "kivi/model/gguf_weights.h"
#include "kivi/util/error.h"

namespace kivi::host {
namespace fs = std::filesystem;

text::Tokenizer load_tokenizer(const fs::path& folder_or_file) {
  if (is_gguf_file(folder_or_file)) {
    const GgufTokenizerFiles files = gguf_tokenizer_files(GgufFile(folder_or_file));
    return text::Tokenizer::from_json(nlohmann::json::parse(files.tokenizer_json),
                                      nlohmann::json::parse(files.tokenizer_config_json),
                                      folder_or_file.string());
  }
  const bool folder = fs::is_directory(folder_or_file);
  const fs::path json = folder ? folder_or_file / "tokenizer.json" : folder_or_file;
  check(fs::is_regular_file(json), json.string() +
                                       ": no tokenizer.json there (expected a checkpoint "
                                       "folder holding one, or the file itself)");
  const fs::path config = json.parent_path() / "tokenizer_config.json";
  if (fs::is_regular_file(config)) return text::Tokenizer::from_file(json, config);
  return text::Tokenizer::from_file(json);
}

}  // namespace kivi::host
