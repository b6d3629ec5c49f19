// Chat renderings against transformers' apply_chat_template (fixtures from
// tools/fixtures/make_tokenizer_fixtures.py; the templates are embedded there, so these run
// without the shared data).
#include "golden_fixtures.h"
#include "kivi/text/chat_template.h"
#include "kivi/util/error.h"

TEST_CASE("chat templates render as transformers does", "[text][golden][chat]") {
  const auto golden = kivi::test::read_fixture("chat.json");
  std::map<std::string, kivi::text::ChatTemplate> templates;
  for (const auto& [name, spec] : golden["templates"].items())
    templates.emplace(name, kivi::text::ChatTemplate(spec["source"].get<std::string>()));
  int passed = 0;
  for (const auto& r : golden["renderings"]) {
    const std::string name = r["template"].get<std::string>();
    nlohmann::json variables = golden["templates"][name]["variables"];
    variables["date_string"] = golden["date_string"];
    const auto& messages = golden["conversations"][r["conversation"].get<std::string>()];
    const bool generation_prompt = r["add_generation_prompt"].get<bool>();
    INFO(name << " / " << r["conversation"] << " / add_generation_prompt=" << generation_prompt);
    if (r.contains("error")) {
      CHECK_THROWS_WITH(templates.at(name).render(messages, generation_prompt, variables),
                        Catch::Contains(r["error"].get<std::string>()));
      ++passed;
      continue;
    }
    const std::string rendered = templates.at(name).render(messages, generation_prompt, variables);
    CHECK(rendered == r["text"].get<std::string>());
    passed += rendered == r["text"].get<std::string>();
  }
  WARN(passed << " of " << golden["renderings"].size() << " chat renderings match the reference");
}

TEST_CASE("llama3.2 template takes today's date from strftime_now", "[text][chat]") {
  const auto golden = kivi::test::read_fixture("chat.json");
  const kivi::text::ChatTemplate llama32(
      golden["templates"]["llama3.2"]["source"].get<std::string>());
  const std::vector<kivi::text::ChatMessage> messages{{"user", "Hi"}};
  const std::string rendered = llama32.render(messages, true, {{"bos_token", "<|begin_of_text|>"}});
  char today[64];
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::strftime(today, sizeof(today), "%d %b %Y", &local);
  CHECK(rendered.find(std::string("Today Date: ") + today + "\n") != std::string::npos);
}
