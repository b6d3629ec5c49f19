// A GGUF file's tokenizer (tokenizer.ggml.*) as the Hugging Face files kivi::text reads:
// tokenizer.json and tokenizer_config.json texts. Only byte-level BPE ("gpt2", the model of
// SmolLM2, Llama 3 and Qwen2 conversions) is supported; the pre-tokenizer follows llama.cpp's
// tokenizer.ggml.pre (default/gpt2, smollm, llama-bpe, qwen2). Tokens of type CONTROL become
// special added tokens, USER_DEFINED ones plain added tokens. Anything else (a SentencePiece
// "llama" model, an unknown pre-tokenizer, ids out of range) is an error naming the file, the
// key and the value.
#pragma once

#include <string>

#include "kivi/model/gguf_file.h"

namespace kivi {

struct GgufTokenizerFiles {
  std::string tokenizer_json;         // tokenizer.json text
  std::string tokenizer_config_json;  // tokenizer_config.json text: bos/eos tokens, chat template
};

GgufTokenizerFiles gguf_tokenizer_files(const GgufFile& file);

}  // namespace kivi
