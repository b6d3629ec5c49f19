// OpenAI request bodies (/v1/completions, /v1/chat/completions) checked and turned into token
// ids and generation options. Every problem is an ApiError with the HTTP status and a message
// that names the field, the value and what was expected; nothing here touches the model.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "kivi/generate/sampler.h"
#include "kivi/text/chat_template.h"
#include "kivi/text/tokenizer.h"

namespace kivi::serve {

struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
};

// What the API layer knows of the model it serves.
struct ServedModel {
  std::string name;  // the "model" clients must send (or omit)
  const text::Tokenizer* tokenizer = nullptr;
  std::optional<text::ChatTemplate> chat;  // none: /v1/chat/completions answers 400
  nlohmann::json template_variables;       // bos_token, eos_token
  std::vector<int64_t> eos_ids;
  int64_t context = 0;  // prompt + generated tokens per sequence
  int64_t vocab_size = 0;
};

struct ApiLimits {
  int64_t max_n = 16;               // sequences per prompt
  int64_t max_sequences = 64;       // prompts x n in one request (the scheduler's queue bound)
  int64_t max_logprobs = 20;        // logprobs / top_logprobs
  int64_t default_max_tokens = 16;  // completions without max_tokens (OpenAI's default)
};

struct CompletionRequest {
  bool chat = false;
  std::vector<std::vector<int64_t>> prompts;  // token ids, one list per prompt
  std::vector<std::string> prompt_texts;      // the prompts as text (echo)
  int64_t n = 1;
  int64_t max_tokens = 16;
  generate::SamplingOptions sampling;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  int64_t logprobs = -1;  // < 0: none; else top-k alternatives per token (chat: top_logprobs)
  bool echo = false;
  bool stream = false;
  bool include_usage = false;
  bool ignore_eos = false;
};

// Parses a request body (already JSON) for the completions (chat = false) or chat endpoint.
CompletionRequest parse_completion_request(const nlohmann::json& body, const ServedModel& model,
                                           const ApiLimits& limits, bool chat);

// The same from the body's text: malformed JSON, numbers no double holds (1e400) and nesting
// deeper than kMaxRequestDepth are 400s too. What the server calls, and the fuzz harness.
inline constexpr int kMaxRequestDepth = 64;
CompletionRequest parse_completion_body(std::string_view text, const ServedModel& model,
                                        const ApiLimits& limits, bool chat);

}  // namespace kivi::serve
