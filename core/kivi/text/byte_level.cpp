#include "kivi/text/byte_level.h"

#include "kivi/text/utf8.h"

namespace kivi::text::byte_level {

namespace {

struct Tables {
  std::array<std::string, 256> chars;
  std::array<int, 324> bytes;  // indexed by code point; the alphabet ends below U+0144
  Tables() {
    bytes.fill(-1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp = printable ? b : 256 + next++;
      utf8::append(chars[b], cp);
      bytes[cp] = b;
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

const std::string& char_for_byte(unsigned char byte) {
  return tables().chars[byte];
}

void encode(std::string_view text, std::string& out) {
  const Tables& t = tables();
  for (const char c : text) out += t.chars[static_cast<unsigned char>(c)];
}

std::optional<unsigned char> byte_for_char(char32_t cp) {
  const Tables& t = tables();
  if (cp >= t.bytes.size() || t.bytes[cp] < 0) return std::nullopt;
  return static_cast<unsigned char>(t.bytes[cp]);
}

bool decode_token(std::string_view token, std::string& out) {
  const std::size_t mark = out.size();
  std::size_t pos = 0;
  while (pos < token.size()) {
    if (utf8::valid_sequence_length(token, pos) == 0) break;
    const auto byte = byte_for_char(utf8::decode(token, pos));
    if (!byte) {
      pos = std::string_view::npos;
      break;
    }
    out.push_back(static_cast<char>(*byte));
  }
  if (pos == token.size()) return true;
  out.resize(mark);
  out.append(token);
  return false;
}

}  // namespace kivi::text::byte_level
