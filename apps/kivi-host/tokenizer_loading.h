// Finds a checkpoint's tokenizer: a folder holding tokenizer.json (with tokenizer_config.json
// and chat_template.jinja when present), a tokenizer.json file, or a GGUF file's metadata.
#pragma once

#include <filesystem>

#include "kivi/text/tokenizer.h"

namespace kivi::host {

text::Tokenizer load_tokenizer(const std::filesystem::path& folder_or_file);

}  // namespace kivi::host
