// Splits a Jinja template into text and tag tokens, applying the whitespace rules that
// transformers' chat-template environment uses (trim_blocks, lstrip_blocks, "-" and "+"
// markers, newline normalization, no kept trailing newline).
#pragma once

#include <string>
#include <vector>

namespace kivi::text::jinja {

enum class TokenKind {
  kText,           // literal template text (value)
  kVariableBegin,  // {{
  kVariableEnd,    // }}
  kBlockBegin,     // {%
  kBlockEnd,       // %}
  kName,           // identifier or keyword
  kString,         // string literal (value is the unescaped text)
  kInteger,
  kFloat,
  kOperator,  // punctuation: == != <= >= // ** < > + - * / % ~ | . , : ( ) [ ] { } =
  kEnd,
};

struct Token {
  TokenKind kind;
  std::string value;
  int line;
};

// Throws kivi::Error with the line number on an unterminated tag, comment or string.
std::vector<Token> tokenize_template(const std::string& source);

}  // namespace kivi::text::jinja
