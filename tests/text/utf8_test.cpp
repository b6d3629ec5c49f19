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
