// Token ids and decoded text of our tokenizers against the reference `tokenizers` library
// (fixtures from tools/fixtures/make_tokenizer_fixtures.py).
#include <vector>

#include "golden_fixtures.h"
#include "kivi/text/stream_decoder.h"

namespace {

using kivi::test::case_text;
using kivi::test::read_fixture;

std::vector<int32_t> ids_of(const nlohmann::json& j) {
  return j.get<std::vector<int32_t>>();
}

void check_tokenizer_against_reference(const std::string& name) {
  const kivi::text::Tokenizer* tokenizer = kivi::test::shared_tokenizer(name);
  if (tokenizer == nullptr) return;
  const auto cases = read_fixture("cases.json")["cases"];
  const auto golden = read_fixture(name + ".json");
  int encode_passed = 0, decode_passed = 0, round_trips = 0;
  for (const auto& c : cases) {
    const std::string case_name = c["name"].get<std::string>();
    const std::string text = case_text(c);
    const auto& expected = golden["encode"][case_name];
    INFO(name << " case '" << case_name << "'");

    const auto ids = tokenizer->encode(text, false);
    const auto ids_special = tokenizer->encode(text, true);
    CHECK(ids == ids_of(expected["ids"]));
    CHECK(ids_special == ids_of(expected["ids_with_special"]));
    encode_passed +=
        (ids == ids_of(expected["ids"])) + (ids_special == ids_of(expected["ids_with_special"]));

    const std::vector<int32_t> ref_ids = ids_of(expected["ids"]);
    const std::vector<int32_t> ref_special = ids_of(expected["ids_with_special"]);
    const std::string decoded = tokenizer->decode(ref_ids, false);
    const std::string decoded_special = tokenizer->decode(ref_special, false);
    const std::string decoded_skip = tokenizer->decode(ref_special, true);
    CHECK(decoded == expected["decode"].get<std::string>());
    CHECK(decoded_special == expected["decode_with_special"].get<std::string>());
    CHECK(decoded_skip == expected["decode_skip_special"].get<std::string>());
    decode_passed += (decoded == expected["decode"].get<std::string>()) +
                     (decoded_special == expected["decode_with_special"].get<std::string>()) +
                     (decoded_skip == expected["decode_skip_special"].get<std::string>());
    // decode(encode(x)) == x wherever the reference round-trips.
    if (expected["decode"].get<std::string>() == text) {
      CHECK(tokenizer->decode(ids, false) == text);
      ++round_trips;
    }
  }
  for (const auto& prefix : golden["decode_prefixes"]) {
    INFO(name << " truncated ids " << prefix["ids"].dump());
    CHECK(tokenizer->decode(ids_of(prefix["ids"]), false) == prefix["text"].get<std::string>());
  }
  WARN(name << ": " << encode_passed << " encodings and " << decode_passed << " decodings of "
            << cases.size() << " cases match the reference; " << round_trips << " round trips");
}

void check_stream_against_reference(const std::string& name) {
  const kivi::text::Tokenizer* tokenizer = kivi::test::shared_tokenizer(name);
  if (tokenizer == nullptr) return;
  const auto golden = read_fixture(name + ".json");
  for (const auto& [case_name, expected] : golden["encode"].items()) {
    const std::vector<int32_t> ids = ids_of(expected["ids_with_special"]);
    kivi::text::StreamDecoder stream(*tokenizer, /*skip_special_tokens=*/true);
    std::string joined;
    std::vector<std::string> chunks;
    for (const int32_t id : ids) {
      chunks.push_back(stream.step(id));
      joined += chunks.back();
    }
    joined += stream.flush();
    INFO(name << " case '" << case_name << "'");
    CHECK(joined == expected["decode_skip_special"].get<std::string>());
    if (expected.contains("stream_skip_special"))
      CHECK(chunks == expected["stream_skip_special"].get<std::vector<std::string>>());
  }
}

}  // namespace

TEST_CASE("llama2 tokenizer matches the reference", "[text][golden]") {
  check_tokenizer_against_reference("llama2");
}
TEST_CASE("llama3 tokenizer matches the reference", "[text][golden]") {
  check_tokenizer_against_reference("llama3");
}
TEST_CASE("llama3.1 tokenizer matches the reference", "[text][golden]") {
  check_tokenizer_against_reference("llama3.1");
}
TEST_CASE("qwen2.5 tokenizer matches the reference", "[text][golden]") {
  check_tokenizer_against_reference("qwen2.5");
}

TEST_CASE("streaming decode matches the reference DecodeStream", "[text][golden][stream]") {
  for (const char* name : {"llama2", "llama3", "llama3.1", "qwen2.5"})
    check_stream_against_reference(name);
}

TEST_CASE("tokenizer_config gives bos, eos and the chat template", "[text]") {
  const auto* llama2 = kivi::test::shared_tokenizer("llama2");
  if (llama2 == nullptr) return;
  CHECK(llama2->bos_id() == 1);
  CHECK(llama2->eos_id() == 2);
  CHECK(llama2->vocab_size() == 32000);
  if (const auto* llama31 = kivi::test::shared_tokenizer("llama3.1")) {
    CHECK(llama31->bos_id() == 128000);
    CHECK(llama31->eos_token() == "<|eot_id|>");
    CHECK(llama31->vocab_size() == 128256);
    // chat_template.jinja beside the config wins, as in transformers.
    CHECK(llama31->chat_template().find("Cutting Knowledge Date") != std::string::npos);
  }
  const auto* qwen = kivi::test::shared_tokenizer("qwen2.5");
  if (qwen == nullptr) return;
  CHECK_FALSE(qwen->bos_id().has_value());
  CHECK(qwen->eos_id() == 151645);
  CHECK(qwen->vocab_size() == 151665);
  CHECK(qwen->token_to_id("<|im_start|>") == 151644);
  CHECK(qwen->id_to_token(151644) == "<|im_start|>");
  CHECK(qwen->is_special(151644));
}
