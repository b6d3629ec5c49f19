// UTF-8 helpers shared by the tokenizer, the decoders and the chat templates.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kivi::text::utf8 {

inline constexpr char32_t kReplacement = 0xFFFD;

// Appends the UTF-8 encoding of `cp` to `out`.
void append(std::string& out, char32_t cp);

// Length in bytes of the valid UTF-8 sequence starting at `s[pos]`, or 0 when the bytes there
// are not a complete, well-formed sequence.
std::size_t valid_sequence_length(std::string_view s, std::size_t pos);

// Decodes the sequence at `s[pos]` and advances `pos` past it. An ill-formed or truncated one
// (text from a template or a request need not be valid) gives U+FFFD and advances past its
// maximal subpart (at least one byte), as sanitize() replaces it; nothing past `s` is read.
char32_t decode(std::string_view s, std::size_t& pos);

// True when `s` is well-formed UTF-8.
bool is_valid(std::string_view s);

// Replaces every maximal ill-formed subsequence with U+FFFD, the Unicode "substitution of
// maximal subparts" practice that Python's bytes.decode(errors="replace") and Rust's
// String::from_utf8_lossy both follow. Valid input is returned unchanged.
std::string sanitize(std::string_view s);

// Number of bytes at the end of `s` that form the beginning of a multi-byte sequence that is
// not yet complete (0..3): text that a streaming decoder must hold back.
std::size_t incomplete_tail_length(std::string_view s);

// Python's str.isspace() for one code point (used by Jinja's trim/strip).
bool is_python_space(char32_t cp);

// The Unicode White_Space property (Rust's char::is_whitespace and regex `\s`).
inline bool is_white_space(char32_t cp) {
  return is_python_space(cp) && (cp < 0x1C || cp > 0x1F);
}

// The code point that ends at `end` (exclusive) in `s`; moves `end` to its start. In ill-formed
// text: U+FFFD, or the code point before stray continuation bytes (they are skipped).
char32_t decode_backward(std::string_view s, std::size_t& end);

}  // namespace kivi::text::utf8
