// Arbitrary bytes as the body of /v1/completions or /v1/chat/completions (the first byte picks
// which), through what the server calls (parse_completion_body: the bounded JSON read, every
// field's check, the prompt's encoding with the bundled tokenizer, chat messages rendered by the
// repository's chat template). An ApiError with a 4xx status is the expected failure; a request
// that passes must keep the invariants the scheduler relies on.
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include "serve/api_request.h"

namespace {

kivi::serve::ServedModel served_model(const kivi::text::Tokenizer& tokenizer) {
  std::ifstream in(KIVI_FUZZ_CHAT_TEMPLATE);
  kivi::serve::ServedModel m;
  m.name = "kivi";
  m.tokenizer = &tokenizer;
  m.chat.emplace(std::string(std::istreambuf_iterator<char>(in), {}));
  m.template_variables = {{"bos_token", "<|im_start|>"}, {"eos_token", "<|im_end|>"}};
  m.eos_ids = {0};
  m.context = 256;
  m.vocab_size = static_cast<int64_t>(tokenizer.vocab_size());
  return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kivi::text::Tokenizer tokenizer =
      kivi::text::Tokenizer::from_file(KIVI_FUZZ_TOKENIZER);
  static const kivi::serve::ServedModel model = served_model(tokenizer);
  if (size == 0) return 0;
  const bool chat = (data[0] & 1) != 0;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  const kivi::serve::ApiLimits limits;
  try {
    const kivi::serve::CompletionRequest r =
        kivi::serve::parse_completion_body(body, model, limits, chat);
    if (r.prompts.empty() || r.n < 1 || r.n > limits.max_n) __builtin_trap();
    if (static_cast<int64_t>(r.prompts.size()) * r.n > limits.max_sequences) __builtin_trap();
    for (const auto& prompt : r.prompts) {
      if (prompt.empty()) __builtin_trap();
      if (static_cast<int64_t>(prompt.size()) + r.max_tokens > model.context) __builtin_trap();
      for (const int64_t id : prompt)
        if (id < 0 || id >= model.vocab_size) __builtin_trap();
    }
  } catch (const kivi::serve::ApiError& e) {
    if (e.status < 400 || e.status > 499) __builtin_trap();
  }
  return 0;
}
