#include "kivi/text/chat_template.h"

#include "kivi/text/jinja_ast.h"
#include "kivi/text/jinja_render.h"
#include "kivi/util/error.h"

namespace kivi::text {

ChatTemplate::ChatTemplate(const std::string& source)
    : body_(std::make_unique<std::vector<jinja::Node>>(jinja::parse_template(source))) {}
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;
ChatTemplate::~ChatTemplate() = default;

std::string ChatTemplate::render(const nlohmann::json& messages, bool add_generation_prompt,
                                 const nlohmann::json& variables) const {
  if (!messages.is_array()) throw Error("chat template: messages must be a JSON array");
  if (!variables.is_object()) throw Error("chat template: variables must be a JSON object");
  jinja::Dict scope;
  scope.emplace_back("messages", jinja::Value::from_json(messages));
  scope.emplace_back("tools", jinja::None{});
  scope.emplace_back("documents", jinja::None{});
  scope.emplace_back("add_generation_prompt", add_generation_prompt);
  for (const auto& [name, value] : variables.items()) {
    jinja::Value converted = jinja::Value::from_json(value);
    bool replaced = false;
    for (auto& [existing, slot] : scope) {
      if (existing == name) {
        slot = converted;
        replaced = true;
      }
    }
    if (!replaced) scope.emplace_back(name, std::move(converted));
  }
  return jinja::render(*body_, scope);
}

std::string ChatTemplate::render(std::span<const ChatMessage> messages, bool add_generation_prompt,
                                 const nlohmann::json& variables) const {
  nlohmann::json list = nlohmann::json::array();
  for (const ChatMessage& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
  return render(list, add_generation_prompt, variables);
}

}  // namespace kivi::text
