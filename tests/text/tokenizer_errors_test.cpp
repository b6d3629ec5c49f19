// Malformed or unsupported tokenizer.json content is a kivi::Error naming the file and what is
// wrong; the tiny tokenizer also checks the SentencePiece layout without the shared data.
#include "kivi_catch.h"

#include <filesystem>
#include <fstream>

#include "kivi/text/tokenizer.h"
#include "kivi/util/error.h"
#include "tiny_tokenizer.h"

namespace {

using Catch::Contains;
using kivi::text::Tokenizer;

void check_rejected(nlohmann::json json, const std::string& expected_message) {
  CHECK_THROWS_WITH(Tokenizer::from_json(json, "bad/tokenizer.json"),
                    Contains("bad/tokenizer.json") && Contains(expected_message));
}

}  // namespace

TEST_CASE("tiny SentencePiece-style tokenizer encodes and decodes", "[text]") {
  const auto tokenizer = Tokenizer::from_json(kivi::test::tiny_sentencepiece_tokenizer(), "tiny");
  const auto ids = tokenizer.encode("hi hi!", true);
  const auto hi = *tokenizer.token_to_id("\u2581hi");
  CHECK(ids == std::vector<int32_t>{1, hi, hi, *tokenizer.token_to_id("!")});
  CHECK(tokenizer.decode(ids, true) == "hi hi!");
  CHECK(tokenizer.decode(ids, false) == "<s> hi hi!");
  // "é" is not in the vocabulary: byte fallback gives its two bytes.
  const auto bytes = tokenizer.encode("\xC3\xA9", false);
  CHECK(bytes == std::vector<int32_t>{*tokenizer.token_to_id("\u2581"),
                                      *tokenizer.token_to_id("<0xC3>"),
                                      *tokenizer.token_to_id("<0xA9>")});
  CHECK(tokenizer.bos_id() == 1);
}

TEST_CASE("unsupported tokenizer.json parts are clear errors", "[text][errors]") {
  auto base = kivi::test::tiny_sentencepiece_tokenizer();
  SECTION("model type") {
    base["model"]["type"] = "WordPiece";
    check_rejected(base, "unsupported model type 'WordPiece'");
  }
  SECTION("pre-tokenizer type") {
    base["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
    check_rejected(base, "unsupported pre_tokenizer type 'BertPreTokenizer'");
  }
  SECTION("normalizer type") {
    base["normalizer"] = {{"type", "BertNormalizer"}};
    check_rejected(base, "unsupported normalizer type 'BertNormalizer'");
  }
  SECTION("decoder type") {
    base["decoder"]["decoders"][0] = {{"type", "WordPiece"}};
    check_rejected(base, "unsupported decoder type 'WordPiece'");
  }
  SECTION("post-processor type") {
    base["post_processor"] = {{"type", "Mystery"}};
    check_rejected(base, "unsupported post_processor type 'Mystery'");
  }
  SECTION("merge of unknown tokens") {
    base["model"]["merges"].push_back("x y");
    check_rejected(base, "'x' is not in the vocabulary");
  }
  SECTION("bad split regex") {
    base["pre_tokenizer"] = {
        {"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
    check_rejected(base, "does not compile");
  }
  SECTION("BPE dropout") {
    base["model"]["dropout"] = 0.1;
    check_rejected(base, "dropout");
  }
}

TEST_CASE("unreadable or malformed files name the file", "[text][errors]") {
  const auto dir = std::filesystem::temp_directory_path() / "kivi_text_errors";
  std::filesystem::create_directories(dir);
  const auto missing = dir / "missing.json";
  CHECK_THROWS_WITH(Tokenizer::from_file(missing), Contains(missing.string()));
  const auto broken = dir / "broken.json";
  std::ofstream(broken) << "{\"model\": ";
  CHECK_THROWS_WITH(Tokenizer::from_file(broken),
                    Contains(broken.string()) && Contains("not valid JSON"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("tokenizer.json nested past the bound is an error naming the file",
          "[text][tokenizer][errors]") {
  nlohmann::json deep = nlohmann::json::array();
  for (int i = 0; i < 2000; ++i) deep = nlohmann::json::array({deep});
  nlohmann::json spec = {
      {"model",
       {{"type", "BPE"}, {"vocab", nlohmann::json::object()}, {"merges", nlohmann::json::array()}}},
      {"normalizer", deep}};
  CHECK_THROWS_WITH(kivi::text::Tokenizer::from_json(spec, "deep/tokenizer.json"),
                    Catch::Matchers::Contains("deep/tokenizer.json") &&
                        Catch::Matchers::Contains("nested more than 512 levels"));
  CHECK_THROWS_WITH(kivi::text::Tokenizer::from_json(nlohmann::json{{"model", spec["model"]}},
                                                     nlohmann::json{{"x", deep}}, "deep"),
                    Catch::Matchers::Contains("nested more than 512 levels"));
}

TEST_CASE("a tokenizer.json file nested past the bound is refused before parsing",
          "[text][tokenizer][errors]") {
  const auto file = std::filesystem::temp_directory_path() / "kivi-deep-tokenizer.json";
  std::ofstream(file) << R"({"model": )" << std::string(300000, '[') << std::string(300000, ']')
                      << "}";
  CHECK_THROWS_WITH(Tokenizer::from_file(file, std::nullopt),
                    Contains(file.string()) && Contains("at byte 521"));
  std::filesystem::remove(file);
}

TEST_CASE("token ids far past the vocabulary are refused, not allocated",
          "[text][tokenizer][errors]") {
  // fuzz_tokenizer_json: a vocab id of 111111264 sized an id table of 3.5 GB.
  nlohmann::json spec = {{"model",
                          {{"type", "BPE"},
                           {"vocab", {{"a", 0}, {"b", 111111264}}},
                           {"merges", nlohmann::json::array()}}}};
  check_rejected(spec, "vocab[\"b\"]: id 111111264 is far past the 2 entries");
  spec["model"]["vocab"]["b"] = 1;
  spec["added_tokens"] = {{{"id", 2147483647}, {"content", "<x>"}, {"special", true}}};
  check_rejected(spec, "added_tokens[0].id: 2147483647 is far past the vocabulary");
  spec["added_tokens"] = {{{"id", 60000}, {"content", "<x>"}, {"special", true}}};
  CHECK(Tokenizer::from_json(spec, "ok/tokenizer.json").vocab_size() == 60001);
  for (const char* key : {"-5", "4294967296", "99999999999"}) {
    const nlohmann::json config = {
        {"added_tokens_decoder", {{key, {{"content", "<y>"}, {"special", true}}}}}};
    CHECK_THROWS_WITH(Tokenizer::from_json(spec, config, "c"),
                      Contains(std::string("added_tokens_decoder[\"") + key + "\"]") &&
                          Contains("expected a token id from 0 to 65537"));
  }
}
