// tokenizer.json loading from arbitrary bytes, then encode and decode of a fixed text with
// what loaded. Malformed JSON (nlohmann's exceptions while parsing) and kivi::Error are the
// expected failures; any other exception, crash or sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kivi/text/stream_decoder.h"
#include "kivi/text/tokenizer.h"
#include "kivi/util/error.h"
#include "kivi/util/json_limits.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  nlohmann::json json;
  try {
    json = kivi::parse_json_bounded(text, "fuzz/tokenizer.json");
  } catch (const nlohmann::json::exception&) {  // malformed, or a number out of range
    return 0;
  } catch (const kivi::Error&) {
    return 0;
  }
  try {
    const auto tokenizer = kivi::text::Tokenizer::from_json(json, "fuzz/tokenizer.json");
    const std::vector<int32_t> ids =
        tokenizer.encode("Hello, world! <s> x\xC3\xA9\xE2\x98\x83 \xFF 123  \n\t end", true);
    (void)tokenizer.decode(ids, false);
    (void)tokenizer.decode(ids, true);
    kivi::text::StreamDecoder stream(tokenizer);
    for (const int32_t id : ids) (void)stream.step(id);
    (void)stream.flush();
  } catch (const kivi::Error&) {
  }
  return 0;
}
