// OpenAI response bodies: the whole answer of a finished request, and the chunks of a streamed
// one, for both the completions and the chat shape (logprobs differ between them).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "serve/api_request.h"
#include "serve/batch_scheduler.h"

namespace kivi::serve {

// What one choice (one prompt x one of n) has produced so far.
struct ChoiceResult {
  std::string text;
  std::vector<TokenScore> scores;         // generated tokens (with logprobs)
  std::vector<int64_t> tokens;            // generated tokens
  std::vector<TokenScore> prompt_scores;  // echo: prompt tokens 1..
  std::string finish_reason;
  int64_t completion_tokens = 0;
  bool done = false;
};

class ResponseFormat {
 public:
  ResponseFormat(const ServedModel& model, const CompletionRequest& request);

  nlohmann::json full(const std::vector<ChoiceResult>& choices) const;
  // Streamed chunks: the opening one of a choice (chat: the role; completions with echo: the
  // prompt), one per token event, the closing one with finish_reason, and the usage.
  nlohmann::json opening(int64_t index) const;
  // `offset`: bytes of text this choice had before the event (for logprobs' text_offset).
  nlohmann::json token(int64_t index, const JobEvent& event, size_t offset) const;
  nlohmann::json closing(int64_t index, const std::string& finish_reason) const;
  nlohmann::json usage_chunk(const std::vector<ChoiceResult>& choices) const;

  static std::string sse(const nlohmann::json& chunk);  // "data: ...\n\n"

 private:
  nlohmann::json envelope(bool chunk) const;
  nlohmann::json usage(const std::vector<ChoiceResult>& choices) const;
  // `offset`: where the first listed token starts in the prompt + completion text.
  nlohmann::json completion_logprobs(const ChoiceResult& choice, int64_t prompt, bool echo,
                                     size_t offset) const;
  nlohmann::json chat_logprob(const TokenScore& score) const;
  std::string token_text(int64_t id) const;

  const ServedModel& model_;
  const CompletionRequest& request_;
  std::string id_;
  int64_t created_;
};

}  // namespace kivi::serve
