#include "kivi/text/utf8.h"

#include <algorithm>

namespace kivi::text::utf8 {

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

namespace {

// For a lead byte: the sequence length and the allowed range of the second byte (the
// Unicode Standard's table 3-7 of well-formed byte sequences); length 0 for an invalid lead.
struct LeadInfo {
  int length;
  unsigned char second_min;
  unsigned char second_max;
};

LeadInfo lead_info(unsigned char b) {
  if (b < 0x80) return {1, 0, 0};
  if (b < 0xC2) return {0, 0, 0};
  if (b < 0xE0) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b < 0xF0) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b < 0xF4) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// How many bytes starting at `pos` belong to a (possibly truncated) well-formed prefix.
// Returns {bytes matched, complete?}.
std::pair<std::size_t, bool> match_prefix(std::string_view s, std::size_t pos) {
  const auto lead = static_cast<unsigned char>(s[pos]);
  const LeadInfo info = lead_info(lead);
  if (info.length == 0) return {0, false};
  if (info.length == 1) return {1, true};
  std::size_t n = 1;
  for (int i = 1; i < info.length; ++i) {
    if (pos + n >= s.size()) return {n, false};
    const auto b = static_cast<unsigned char>(s[pos + n]);
    const unsigned char lo = i == 1 ? info.second_min : 0x80;
    const unsigned char hi = i == 1 ? info.second_max : 0xBF;
    if (b < lo || b > hi) return {n, false};
    ++n;
  }
  return {n, true};
}

}  // namespace

std::size_t valid_sequence_length(std::string_view s, std::size_t pos) {
  const auto [n, complete] = match_prefix(s, pos);
  return complete ? n : 0;
}

char32_t decode(std::string_view s, std::size_t& pos) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  if (b0 < 0x80) {
    ++pos;
    return b0;
  }
  const auto [matched, complete] = match_prefix(s, pos);
  if (!complete) {  // ill-formed: one U+FFFD for the maximal subpart, as sanitize() makes
    pos += std::max<std::size_t>(matched, 1);
    return kReplacement;
  }
  const int length = static_cast<int>(matched);
  char32_t cp = b0 & (0x7F >> length);
  for (int i = 1; i < length; ++i) cp = (cp << 6) | (static_cast<unsigned char>(s[pos + i]) & 0x3F);
  pos += length;
  return cp;
}

bool is_valid(std::string_view s) {
  std::size_t pos = 0;
  while (pos < s.size()) {
    if (static_cast<unsigned char>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const std::size_t n = valid_sequence_length(s, pos);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

std::string sanitize(std::string_view s) {
  if (is_valid(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  std::size_t pos = 0;
  while (pos < s.size()) {
    const auto [n, complete] = match_prefix(s, pos);
    if (complete) {
      out.append(s.substr(pos, n));
      pos += n;
    } else {
      append(out, kReplacement);
      pos += n == 0 ? 1 : n;
    }
  }
  return out;
}

std::size_t incomplete_tail_length(std::string_view s) {
  // A sequence is at most 4 bytes, so only the last 3 bytes can start an unfinished one.
  const std::size_t first = s.size() >= 3 ? s.size() - 3 : 0;
  for (std::size_t pos = first; pos < s.size(); ++pos) {
    const auto [n, complete] = match_prefix(s, pos);
    if (!complete && n > 0 && pos + n == s.size()) return s.size() - pos;
  }
  return 0;
}

char32_t decode_backward(std::string_view s, std::size_t& end) {
  std::size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  std::size_t pos = start;
  const char32_t cp = decode(s, pos);
  end = start;
  return cp;
}

bool is_python_space(char32_t cp) {
  switch (cp) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x1C:
    case 0x1D:
    case 0x1E:
    case 0x1F:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

}  // namespace kivi::text::utf8
