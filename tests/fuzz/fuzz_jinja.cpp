// Jinja parse + render of arbitrary template text, with chat-like variables. Errors must be
// kivi::Error; anything else escaping (another exception, a crash, a sanitizer report, a
// hang past libFuzzer's timeout) is a bug. The bounds are smaller than the defaults so that
// one input costs milliseconds.
#include <cstddef>
#include <cstdint>
#include <string>

#include "kivi/text/jinja_ast.h"
#include "kivi/text/jinja_render.h"
#include "kivi/util/error.h"

namespace jinja = kivi::text::jinja;

namespace {

jinja::Dict chat_variables() {
  auto message = [](const char* role, const char* content) {
    return jinja::Value(jinja::Dict{{"role", role}, {"content", content}});
  };
  jinja::List tool_call{jinja::Value(
      jinja::Dict{{"type", "function"},
                  {"function", jinja::Dict{{"name", "f"}, {"arguments", jinja::Dict{{"x", 1}}}}}})};
  jinja::Dict assistant{{"role", "assistant"}, {"content", "Hi."}, {"tool_calls", tool_call}};
  return {{"messages", jinja::List{message("system", "Be brief."), message("user", "Hello"),
                                   jinja::Value(std::move(assistant)),
                                   message("tool", "{\"y\": 2}"), message("user", "Bye é ☃")}},
          {"bos_token", "<s>"},
          {"eos_token", "</s>"},
          {"add_generation_prompt", true},
          {"tools", jinja::None{}},
          {"documents", jinja::None{}}};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const jinja::Dict variables = chat_variables();
  jinja::Limits limits;
  limits.max_loop_iterations = 10'000;
  limits.max_range = 10'000;
  limits.max_string_bytes = 1 << 20;
  limits.max_steps = 200'000;
  const std::string source(reinterpret_cast<const char*>(data), size);
  try {
    const jinja::Body body = jinja::parse_template(source, limits);
    (void)jinja::render(body, variables, limits);
  } catch (const kivi::Error&) {
  }
  return 0;
}
