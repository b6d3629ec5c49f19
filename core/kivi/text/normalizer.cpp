#include "kivi/text/normalizer.h"

#include <utf8proc.h>

#include <nlohmann/json.hpp>
#include <vector>

#include "kivi/text/json_fields.h"
#include "kivi/text/replacer.h"
#include "kivi/text/utf8.h"
#include "kivi/util/error.h"

namespace kivi::text {

namespace {

bool is_ascii(const std::string& text) {
  for (const char c : text)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(int options) : options_(options) {}
  void normalize(std::string& text) const override {
    if (is_ascii(text)) return;  // ASCII is invariant under every normalization form
    utf8proc_uint8_t* result = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                            static_cast<utf8proc_ssize_t>(text.size()), &result,
                                            static_cast<utf8proc_option_t>(options_));
    if (n < 0) throw Error(std::string("unicode normalization failed: ") + utf8proc_errmsg(n));
    text.assign(reinterpret_cast<const char*>(result), static_cast<std::size_t>(n));
    std::free(result);
  }

 private:
  int options_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    std::string out;
    out.reserve(text.size());
    std::size_t pos = 0;
    while (pos < text.size()) {
      const auto c = static_cast<unsigned char>(text[pos]);
      if (c < 0x80) {
        out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c));
        ++pos;
        continue;
      }
      utf8::append(out, static_cast<char32_t>(utf8proc_tolower(
                            static_cast<utf8proc_int32_t>(utf8::decode(text, pos)))));
    }
    text = std::move(out);
  }
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text) const override {
    std::size_t begin = 0;
    if (left_) {
      while (begin < text.size()) {
        std::size_t next = begin;
        if (!utf8::is_white_space(utf8::decode(text, next))) break;
        begin = next;
      }
    }
    std::size_t end = text.size();
    if (right_) {
      while (end > begin) {
        std::size_t start = end;
        if (!utf8::is_white_space(utf8::decode_backward(text, start))) break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_;
  bool right_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  void normalize(std::string& text) const override {
    for (const auto& part : parts_) part->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(const nlohmann::json& spec, const std::string& where)
      : replacer_(spec, where) {}
  void normalize(std::string& text) const override { text = replacer_.apply(text); }

 private:
  Replacer replacer_;
};

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  const std::string type = json_type(spec, where);
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  if (type == "NFD")
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
  if (type == "NFKC")
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_COMPOSE |
                                               UTF8PROC_COMPAT);
  if (type == "NFKD")
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE |
                                               UTF8PROC_COMPAT);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Prepend")
    return std::make_unique<PrependNormalizer>(json_string(spec, "prepend", where));
  if (type == "Replace") return std::make_unique<ReplaceNormalizer>(spec, where);
  if (type == "Strip")
    return std::make_unique<StripNormalizer>(json_bool(spec, "strip_left", where, false),
                                             json_bool(spec, "strip_right", where, false));
  if (type == "Sequence") {
    return std::make_unique<SequenceNormalizer>(
        make_each(spec, "normalizers", where, make_normalizer));
  }
  throw Error(where + ": unsupported normalizer type '" + type +
              "' (supported: NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip, Sequence)");
}

}  // namespace kivi::text
