// Chat templates: the Jinja template of tokenizer_config.json ("chat_template") or
// chat_template.jinja, rendered as transformers' apply_chat_template(tokenize=False) does.
// A small Jinja interpreter runs the template; constructs it does not support are a
// kivi::Error when parsing or rendering, never a silently different prompt.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kivi::text {

namespace jinja {
struct Node;
}

struct ChatMessage {
  std::string role;
  std::string content;
};

class ChatTemplate {
 public:
  // Parses `source`; throws kivi::Error naming the line of an unsupported construct.
  explicit ChatTemplate(const std::string& source);
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;
  ~ChatTemplate();

  // `messages` is a JSON array of message objects ({"role", "content", ...});
  // `variables` an object of further template variables, typically bos_token and eos_token
  // (and e.g. date_string). As in transformers, `tools` and `documents` are none unless given.
  std::string render(const nlohmann::json& messages, bool add_generation_prompt,
                     const nlohmann::json& variables = nlohmann::json::object()) const;
  std::string render(std::span<const ChatMessage> messages, bool add_generation_prompt,
                     const nlohmann::json& variables = nlohmann::json::object()) const;

 private:
  std::unique_ptr<std::vector<jinja::Node>> body_;
};

}  // namespace kivi::text
