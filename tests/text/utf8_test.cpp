#include "kivi_catch.h"

#include "kivi/text/utf8.h"

namespace utf8 = kivi::text::utf8;

TEST_CASE("invalid UTF-8 is replaced per maximal subpart, as Python does", "[text][utf8]") {
  const std::string r = "\xEF\xBF\xBD";
  CHECK(utf8::sanitize("abc") == "abc");
  CHECK(utf8::sanitize("a\xFF"
                       "b") == "a" + r + "b");
  CHECK(utf8::sanitize("\xE2\x82") == r);              // truncated 3-byte sequence: one U+FFFD
  CHECK(utf8::sanitize("\xC3\x28") == r + "(");        // bad continuation
  CHECK(utf8::sanitize("\xED\xA0\x80") == r + r + r);  // surrogate: each byte
  CHECK(utf8::sanitize("\xF0\x9F\x98") == r);
  CHECK(utf8::sanitize("\xC0\xAF") == r + r);  // overlong
}

TEST_CASE("incomplete tails are detected", "[text][utf8]") {
  CHECK(utf8::incomplete_tail_length("ab") == 0);
  CHECK(utf8::incomplete_tail_length("a\xF0\x9F\x98") == 3);
  CHECK(utf8::incomplete_tail_length("a\xF0\x9F\x98\x80") == 0);
  CHECK(utf8::incomplete_tail_length("a\xFF") == 0);
}

TEST_CASE("decode of ill-formed UTF-8 gives U+FFFD and reads nothing past the end",
          "[text][utf8]") {
  // Found by fuzz_jinja: a truncated sequence before "{%-" was read past the string's end.
  for (const std::string& s : {std::string("\xE2"), std::string("\xF0\x9F\x98"),
                               std::string("\xFF"), std::string("\x80\x80")}) {
    std::size_t pos = 0;
    CHECK(utf8::decode(s, pos) == utf8::kReplacement);
    CHECK(pos >= 1);
    CHECK(pos <= s.size());
    std::size_t end = s.size();
    utf8::decode_backward(s, end);
    CHECK(end < s.size());
  }
  std::size_t pos = 0;
  CHECK(utf8::decode("\xE2\x82x", pos) == utf8::kReplacement);
  CHECK(pos == 2);
  pos = 0;
  CHECK(utf8::decode("\xE2\x82\xAC", pos) == 0x20AC);
  CHECK(pos == 3);
}
