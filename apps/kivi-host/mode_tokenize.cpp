// `kivi-host tokenize`: encodes [tokenize] text with a checkpoint's tokenizer, decodes it back
// (also token by token through the streaming decoder) and renders [[tokenize.messages]] with
// the tokenizer's chat template, or the Jinja file [tokenize] chat_template names.
#include <filesystem>
#include <fstream>
#include <ostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "host_context.h"
#include "kivi/text/chat_template.h"
#include "kivi/text/stream_decoder.h"
#include "kivi/util/input_file.h"
#include "tokenizer_loading.h"

namespace kivi::host {

int run_tokenize_mode(HostContext& context) {
  const TokenizeChoice& choice = context.config.tokenize;
  check(
      !choice.tokenizer.empty(),
      context.config.file.string() +
          ": mode tokenize needs a [tokenize] table with `tokenizer` (a folder or tokenizer.json)");
  const std::string where = context.config.file.string() + ": [tokenize] ";
  check(std::filesystem::exists(choice.tokenizer),
        where + "tokenizer: " + choice.tokenizer.string() + " does not exist" +
            missing_input_note(context.config.file, choice.tokenizer));
  const text::Tokenizer tokenizer = load_tokenizer(choice.tokenizer);
  auto& out = context.out;
  out << "tokenizer: " << choice.tokenizer.string() << " (vocabulary " << tokenizer.vocab_size()
      << ")\n";

  const std::vector<int32_t> ids = tokenizer.encode(choice.text, choice.add_special_tokens);
  out << "text: " << nlohmann::json(choice.text).dump() << "\n";
  out << "ids (" << ids.size() << "):";
  for (int32_t id : ids) out << " " << id;
  out << "\npieces:";
  for (int32_t id : ids)
    out << " " << nlohmann::json(tokenizer.id_to_token(id).value_or("?")).dump();
  const std::string decoded = tokenizer.decode(ids, choice.skip_special_tokens);
  out << "\ndecoded: " << nlohmann::json(decoded).dump() << "\n";
  text::StreamDecoder stream(tokenizer, choice.skip_special_tokens);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.step(id);
  streamed += stream.flush();
  out << "streamed decode " << (streamed == decoded ? "equals" : "DIFFERS FROM")
      << " the full decode\n";

  if (!choice.messages.empty()) {
    std::string source = tokenizer.chat_template();
    if (!choice.chat_template.empty()) {
      std::ifstream in(choice.chat_template);
      check(in.good(), where + "chat_template: cannot open " + choice.chat_template.string() +
                           missing_input_note(context.config.file, choice.chat_template));
      check_input_file(choice.chat_template, "[tokenize] chat_template");
      std::ostringstream text;
      text << in.rdbuf();
      source = text.str();
    }
    check(!source.empty(),
          choice.tokenizer.string() +
              ": the tokenizer has no chat template (tokenizer_config.json "
              "chat_template or chat_template.jinja); give [tokenize] chat_template");
    const text::ChatTemplate chat(source);
    nlohmann::json messages = nlohmann::json::array();
    for (const auto& [role, content] : choice.messages)
      messages.push_back({{"role", role}, {"content", content}});
    const nlohmann::json variables = {{"bos_token", tokenizer.bos_token()},
                                      {"eos_token", tokenizer.eos_token()}};
    const std::string prompt = chat.render(messages, choice.add_generation_prompt, variables);
    // The rendered prompt already holds its special tokens; encoding adds no more.
    const std::vector<int32_t> prompt_ids = tokenizer.encode(prompt, false);
    out << "chat prompt (" << prompt_ids.size() << " tokens):\n" << prompt << "\n";
  }
  return 0;
}

}  // namespace kivi::host
