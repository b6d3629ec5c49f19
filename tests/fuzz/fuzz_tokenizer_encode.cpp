// Encode and decode of arbitrary bytes with the shipped tokenizer (models/tokenizer, the one
// the bundled models share). The first byte picks: encode the rest as text (ill-formed UTF-8
// included), or decode the rest read as int32 ids (out-of-range ids included), in one call and
// streamed. Nothing may throw: encode and decode accept any input.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kivi/text/stream_decoder.h"
#include "kivi/text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kivi::text::Tokenizer tokenizer =
      kivi::text::Tokenizer::from_file(KIVI_FUZZ_TOKENIZER);
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  ++data;
  --size;
  std::vector<int32_t> ids;
  if (mode & 1) {
    ids.resize(size / 4);
    if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
    if (mode & 2)  // mostly valid ids: the decoder's paths beyond "unknown id"
      for (int32_t& id : ids)
        id = static_cast<int32_t>(static_cast<uint32_t>(id) % (tokenizer.vocab_size() + 8));
  } else {
    ids = tokenizer.encode(std::string_view(reinterpret_cast<const char*>(data), size),
                           (mode & 2) != 0);
  }
  const std::string text = tokenizer.decode(ids, (mode & 4) != 0);
  kivi::text::StreamDecoder stream(tokenizer, (mode & 4) != 0);
  std::string streamed;
  for (const int32_t id : ids) streamed += stream.step(id);
  streamed += stream.flush();
  (void)text;
  return 0;
}
