// GPT-2's byte-level alphabet: every byte maps to one printable code point so that BPE can work
// on arbitrary bytes. Printable Latin-1 bytes map to themselves, the other 68 to U+0100 onwards.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace kivi::text::byte_level {

// The UTF-8 text of the code point that stands for `byte`.
const std::string& char_for_byte(unsigned char byte);

// Maps every byte of `text` to its stand-in character, appending to `out`.
void encode(std::string_view text, std::string& out);

// The byte a stand-in code point represents, or nothing for other code points.
std::optional<unsigned char> byte_for_char(char32_t cp);

// Maps the characters of `token` back to bytes and appends them to `out`. When a character is
// outside the alphabet, the token's own UTF-8 bytes are appended instead (as the reference
// decoder does for added tokens like "<|eot_id|>" that contain plain spaces) and false returned.
bool decode_token(std::string_view token, std::string& out);

}  // namespace kivi::text::byte_level
