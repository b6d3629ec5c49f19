#include "kivi/text/jinja_lexer.h"

#include <cctype>
#include <string_view>

#include "kivi/text/utf8.h"
#include "kivi/util/error.h"

namespace kivi::text::jinja {

namespace {

// Jinja joins the lines of the source with "\n" and drops one trailing newline.
std::string normalize_newlines(const std::string& source) {
  std::string out;
  out.reserve(source.size());
  for (std::size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// Python's str.rstrip()/lstrip() on whitespace.
std::size_t skip_space_forward(std::string_view s, std::size_t pos) {
  while (pos < s.size()) {
    std::size_t next = pos;
    if (utf8::valid_sequence_length(s, pos) == 0 || !utf8::is_python_space(utf8::decode(s, next)))
      break;
    pos = next;
  }
  return pos;
}

std::size_t trim_space_backward(std::string_view s) {
  std::size_t end = s.size();
  while (end > 0) {
    std::size_t start = end;
    if (!utf8::is_python_space(utf8::decode_backward(s, start))) break;
    end = start;
  }
  return end;
}

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)) {}

  std::vector<Token> run() {
    std::size_t pos = 0;
    while (pos < src_.size()) {
      const std::size_t tag = find_tag(pos);
      std::string text = src_.substr(pos, tag - pos);
      if (tag == src_.size()) {
        emit_text(std::move(text), line_at(pos));
        break;
      }
      const char kind = src_[tag + 1];  // '{', '%' or '#'
      const char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (sign == '-') {
        text.resize(trim_space_backward(text));
      } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: drop spaces and tabs between the start of the line and the tag.
        const std::size_t line_start =
            text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
        const bool at_line_start = line_start > 0 || pos == 0 || src_[pos - 1] == '\n';
        if (at_line_start && text.find_first_not_of(" \t", line_start) == std::string::npos)
          text.resize(line_start);
      }
      emit_text(std::move(text), line_at(pos));
      pos = tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      if (kind == '#') {
        pos = end_comment(pos);
      } else {
        pos = lex_tag(pos, kind == '{');
      }
    }
    tokens_.push_back({TokenKind::kEnd, "", line_at(src_.size())});
    return std::move(tokens_);
  }

 private:
  int line_at(std::size_t pos) {
    // Lines are counted incrementally: positions only move forward.
    for (; counted_ < pos && counted_ < src_.size(); ++counted_)
      if (src_[counted_] == '\n') ++line_;
    return line_;
  }

  void emit_text(std::string text, int line) {
    if (!text.empty()) tokens_.push_back({TokenKind::kText, std::move(text), line});
  }

  std::size_t find_tag(std::size_t pos) const {
    for (std::size_t i = src_.find('{', pos); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#'))
        return i;
    }
    return src_.size();
  }

  // After a tag's closing marker: "-" strips all following whitespace, otherwise a block or
  // comment swallows one newline (trim_blocks) unless the marker was "+".
  std::size_t after_tag_end(std::size_t end, char sign, bool is_variable) {
    if (sign == '-') return skip_space_forward(src_, end);
    if (!is_variable && sign != '+' && end < src_.size() && src_[end] == '\n') return end + 1;
    return end;
  }

  std::size_t end_comment(std::size_t pos) {
    const std::size_t close = src_.find("#}", pos);
    if (close == std::string::npos)
      throw Error("chat template line " + std::to_string(line_at(pos)) + ": unterminated comment");
    const char sign =
        close > pos && (src_[close - 1] == '-' || src_[close - 1] == '+') ? src_[close - 1] : '\0';
    return after_tag_end(close + 2, sign, false);
  }

  std::size_t lex_tag(std::size_t pos, bool is_variable) {
    const int line = line_at(pos);
    tokens_.push_back({is_variable ? TokenKind::kVariableBegin : TokenKind::kBlockBegin, "", line});
    const char close = is_variable ? '}' : '%';
    int open_brackets = 0;  // "}}" inside a dict literal does not close the tag
    while (true) {
      while (pos < src_.size() && std::isspace(static_cast<unsigned char>(src_[pos]))) ++pos;
      if (pos >= src_.size())
        throw Error("chat template line " + std::to_string(line) + ": unterminated tag");
      const char c = src_[pos];
      // The closing marker, optionally with a whitespace-control sign.
      for (const char sign : {'\0', '-', '+'}) {
        if (open_brackets > 0) break;
        const std::size_t at = pos + (sign ? 1 : 0);
        if ((sign == '\0' || c == sign) && at + 1 < src_.size() && src_[at] == close &&
            src_[at + 1] == '}') {
          tokens_.push_back(
              {is_variable ? TokenKind::kVariableEnd : TokenKind::kBlockEnd, "", line_at(pos)});
          return after_tag_end(at + 2, sign, is_variable);
        }
      }
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        const std::size_t start = pos;
        while (pos < src_.size() &&
               (std::isalnum(static_cast<unsigned char>(src_[pos])) || src_[pos] == '_'))
          ++pos;
        tokens_.push_back({TokenKind::kName, src_.substr(start, pos - start), line_at(start)});
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        pos = lex_number(pos);
      } else if (c == '\'' || c == '"') {
        pos = lex_string(pos);
      } else {
        static const char* const kOperators[] = {"==", "!=", "<=", ">=", "//", "**", "<", ">", "+",
                                                 "-",  "*",  "/",  "%",  "~",  "|",  ".", ",", ":",
                                                 "(",  ")",  "[",  "]",  "{",  "}",  "="};
        bool matched = false;
        for (const char* op : kOperators) {
          const std::string_view o(op);
          if (src_.compare(pos, o.size(), o) == 0) {
            tokens_.push_back({TokenKind::kOperator, std::string(o), line_at(pos)});
            if (o == "(" || o == "[" || o == "{") ++open_brackets;
            if ((o == ")" || o == "]" || o == "}") && open_brackets > 0) --open_brackets;
            pos += o.size();
            matched = true;
            break;
          }
        }
        if (!matched)
          throw Error("chat template line " + std::to_string(line_at(pos)) +
                      ": unexpected character '" + std::string(1, c) + "' in a tag");
      }
    }
  }

  std::size_t lex_number(std::size_t pos) {
    const std::size_t start = pos;
    while (pos < src_.size() &&
           (std::isdigit(static_cast<unsigned char>(src_[pos])) || src_[pos] == '_'))
      ++pos;
    bool is_float = false;
    if (pos + 1 < src_.size() && src_[pos] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[pos + 1]))) {
      is_float = true;
      ++pos;
      while (pos < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos]))) ++pos;
    }
    std::string text;
    for (std::size_t i = start; i < pos; ++i)
      if (src_[i] != '_') text += src_[i];
    tokens_.push_back({is_float ? TokenKind::kFloat : TokenKind::kInteger, text, line_at(start)});
    return pos;
  }

  // Python string-literal escapes, as Jinja unescapes them.
  std::size_t lex_string(std::size_t pos) {
    const int line = line_at(pos);
    const char quote = src_[pos++];
    std::string value;
    while (true) {
      if (pos >= src_.size())
        throw Error("chat template line " + std::to_string(line) + ": unterminated string");
      const char c = src_[pos++];
      if (c == quote) break;
      if (c != '\\' || pos >= src_.size()) {
        value += c;
        continue;
      }
      const char e = src_[pos++];
      switch (e) {
        case 'n':
          value += '\n';
          break;
        case 't':
          value += '\t';
          break;
        case 'r':
          value += '\r';
          break;
        case '0':
          value += '\0';
          break;
        case 'a':
          value += '\a';
          break;
        case 'b':
          value += '\b';
          break;
        case 'f':
          value += '\f';
          break;
        case 'v':
          value += '\v';
          break;
        case '\\':
        case '\'':
        case '"':
          value += e;
          break;
        case '\n':
          break;
        case 'x':
        case 'u':
        case 'U': {
          const std::size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (pos + digits > src_.size())
            throw Error("chat template line " + std::to_string(line) + ": truncated \\" + e +
                        " escape");
          char32_t cp = 0;
          for (std::size_t i = pos; i < pos + digits; ++i) {
            const char h = src_[i];
            if (!std::isxdigit(static_cast<unsigned char>(h)))
              throw Error("chat template line " + std::to_string(line) + ": \\" + e +
                          " escape needs " + std::to_string(digits) + " hex digits, got '" +
                          src_.substr(pos, digits) + "'");
            cp = cp * 16 + static_cast<char32_t>(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
          }
          if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            throw Error("chat template line " + std::to_string(line) + ": \\" + e + " escape " +
                        src_.substr(pos, digits) + " is not a Unicode scalar value");
          utf8::append(value, cp);
          pos += digits;
          break;
        }
        default:
          value += '\\';
          value += e;
      }
    }
    tokens_.push_back({TokenKind::kString, std::move(value), line});
    return pos;
  }

  std::string src_;
  std::vector<Token> tokens_;
  std::size_t counted_ = 0;
  int line_ = 1;
};

}  // namespace

std::vector<Token> tokenize_template(const std::string& source) {
  return Lexer(normalize_newlines(source)).run();
}

}  // namespace kivi::text::jinja
