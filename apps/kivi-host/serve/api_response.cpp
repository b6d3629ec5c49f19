#include "serve/api_response.h"

#include <atomic>
#include <ctime>

namespace kivi::serve {
using nlohmann::json;

ResponseFormat::ResponseFormat(const ServedModel& model, const CompletionRequest& request)
    : model_(model), request_(request), created_(static_cast<int64_t>(std::time(nullptr))) {
  static std::atomic<uint64_t> counter{0};
  id_ = std::string(request.chat ? "chatcmpl-" : "cmpl-") + std::to_string(created_) + "-" +
        std::to_string(++counter);
}

std::string ResponseFormat::sse(const json& chunk) {
  return "data: " + chunk.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

std::string ResponseFormat::token_text(int64_t id) const {
  if (!model_.tokenizer) return std::to_string(id);
  const int32_t one[] = {static_cast<int32_t>(id)};
  return model_.tokenizer->decode(one, false);
}

json ResponseFormat::envelope(bool chunk) const {
  const char* object =
      request_.chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  return {{"id", id_}, {"object", object}, {"created", created_}, {"model", model_.name}};
}

json ResponseFormat::usage(const std::vector<ChoiceResult>& choices) const {
  int64_t prompt = 0, completion = 0;
  for (const auto& p : request_.prompts) prompt += static_cast<int64_t>(p.size());
  for (const auto& c : choices) completion += c.completion_tokens;
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

// Completions logprobs: parallel lists; a position's top_logprobs always holds its own token
// (as OpenAI's do), so lm-eval's greedy check compares against the true maximum.
json ResponseFormat::completion_logprobs(const ChoiceResult& choice, int64_t prompt, bool echo,
                                         size_t offset) const {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  auto add = [&](int64_t id, const TokenScore* score) {
    const std::string text = token_text(id);
    tokens.push_back(text);
    offsets.push_back(offset);
    offset += text.size();
    if (!score) {
      token_logprobs.push_back(nullptr);
      top.push_back(nullptr);
      return;
    }
    token_logprobs.push_back(score->logprob);
    json alternatives = json::object();
    for (const auto& [alt, lp] : score->top) alternatives[token_text(alt)] = lp;
    if (!alternatives.contains(text)) alternatives[text] = score->logprob;
    top.push_back(alternatives);
  };
  if (echo) {
    const auto& ids = request_.prompts[prompt];
    for (size_t t = 0; t < ids.size(); ++t)
      add(ids[t],
          t > 0 && t - 1 < choice.prompt_scores.size() ? &choice.prompt_scores[t - 1] : nullptr);
  }
  for (const TokenScore& s : choice.scores) add(s.token, &s);
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top},
          {"text_offset", offsets}};
}

json ResponseFormat::chat_logprob(const TokenScore& score) const {
  auto entry = [&](int64_t id, double lp) {
    const std::string text = token_text(id);
    return json{{"token", text},
                {"logprob", lp},
                {"bytes", std::vector<uint8_t>(text.begin(), text.end())}};
  };
  json out = entry(score.token, score.logprob);
  json top = json::array();
  for (const auto& [id, lp] : score.top) top.push_back(entry(id, lp));
  out["top_logprobs"] = top;
  return out;
}

json ResponseFormat::full(const std::vector<ChoiceResult>& choices) const {
  json body = envelope(false);
  json list = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    const int64_t prompt = static_cast<int64_t>(i) / request_.n;
    json choice = {{"index", i}, {"finish_reason", c.finish_reason}};
    if (request_.chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
      if (request_.logprobs >= 0) {
        json content = json::array();
        for (const TokenScore& s : c.scores) content.push_back(chat_logprob(s));
        choice["logprobs"] = {{"content", content}};
      } else {
        choice["logprobs"] = nullptr;
      }
    } else {
      choice["text"] = (request_.echo ? request_.prompt_texts[prompt] : std::string()) + c.text;
      choice["logprobs"] =
          request_.logprobs >= 0
              ? completion_logprobs(c, prompt, request_.echo,
                                    request_.echo ? 0 : request_.prompt_texts[prompt].size())
              : json(nullptr);
    }
    list.push_back(choice);
  }
  body["choices"] = list;
  body["usage"] = usage(choices);
  return body;
}

json ResponseFormat::opening(int64_t index) const {
  json chunk = envelope(true);
  json choice = {{"index", index}, {"finish_reason", nullptr}, {"logprobs", nullptr}};
  if (request_.chat)
    choice["delta"] = {{"role", "assistant"}, {"content", ""}};
  else
    choice["text"] = request_.prompt_texts[index / request_.n];
  chunk["choices"] = json::array({choice});
  return chunk;
}

json ResponseFormat::token(int64_t index, const JobEvent& event, size_t offset) const {
  json chunk = envelope(true);
  json choice = {{"index", index}, {"finish_reason", nullptr}, {"logprobs", nullptr}};
  if (request_.chat) {
    choice["delta"] = {{"content", event.text}};
    if (event.score) choice["logprobs"] = {{"content", json::array({chat_logprob(*event.score)})}};
  } else {
    choice["text"] = event.text;
    if (event.score) {
      ChoiceResult one;
      one.scores.push_back(*event.score);
      const int64_t prompt = index / request_.n;  // this token's lists
      choice["logprobs"] =
          completion_logprobs(one, prompt, false, request_.prompt_texts[prompt].size() + offset);
    }
  }
  chunk["choices"] = json::array({choice});
  return chunk;
}

json ResponseFormat::closing(int64_t index, const std::string& finish_reason) const {
  json chunk = envelope(true);
  json choice = {{"index", index}, {"finish_reason", finish_reason}, {"logprobs", nullptr}};
  if (request_.chat)
    choice["delta"] = json::object();
  else
    choice["text"] = "";
  chunk["choices"] = json::array({choice});
  return chunk;
}

json ResponseFormat::usage_chunk(const std::vector<ChoiceResult>& choices) const {
  json chunk = envelope(true);
  chunk["choices"] = json::array();
  chunk["usage"] = usage(choices);
  return chunk;
}

}  // namespace kivi::serve
