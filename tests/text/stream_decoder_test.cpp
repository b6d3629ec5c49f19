// Streaming detokenization on a tiny tokenizer (no shared data needed).
#include "kivi_catch.h"

#include "kivi/text/stream_decoder.h"
#include "tiny_tokenizer.h"

TEST_CASE("stream decoder holds back incomplete UTF-8 and matches the full decode",
          "[text][stream]") {
  const auto tokenizer =
      kivi::text::Tokenizer::from_json(kivi::test::tiny_sentencepiece_tokenizer(), "tiny");
  const std::string text = "hi h\xC3\xA9 \xF0\x9F\x98\x80!";  // é and 😀 go through byte fallback
  const auto ids = tokenizer.encode(text, true);
  REQUIRE(tokenizer.decode(ids, true) == text);
  kivi::text::StreamDecoder stream(tokenizer);
  std::string joined;
  for (const int32_t id : ids) {
    const std::string piece = stream.step(id);
    // Every piece is complete UTF-8 on its own.
    CHECK(piece.find("\xEF\xBF\xBD") == std::string::npos);
    joined += piece;
  }
  joined += stream.flush();
  CHECK(joined == text);
}

TEST_CASE("stream decoder flushes an unfinished character as the full decode does",
          "[text][stream]") {
  const auto tokenizer =
      kivi::text::Tokenizer::from_json(kivi::test::tiny_sentencepiece_tokenizer(), "tiny");
  auto ids = tokenizer.encode("hi \xF0\x9F\x98\x80", false);
  ids.pop_back();  // cut the emoji's last byte
  kivi::text::StreamDecoder stream(tokenizer);
  std::string joined;
  for (const int32_t id : ids) joined += stream.step(id);
  CHECK(joined == "hi ");
  joined += stream.flush();
  CHECK(joined == tokenizer.decode(ids, true));
}
