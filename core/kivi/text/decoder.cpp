#include "kivi/text/decoder.h"

#include <nlohmann/json.hpp>

#include "kivi/text/byte_level.h"
#include "kivi/text/json_fields.h"
#include "kivi/text/replacer.h"
#include "kivi/text/utf8.h"
#include "kivi/util/error.h"

namespace kivi::text {

namespace {

class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& token : tokens) byte_level::decode_token(token, bytes);
    tokens.assign(1, utf8::sanitize(bytes));
  }
  bool is_byte_level() const override { return true; }
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(const nlohmann::json& spec, const std::string& where) : replacer_(spec, where) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& token : tokens) token = replacer_.apply(token);
  }

 private:
  Replacer replacer_;
};

// "<0x41>"-style tokens become bytes; a run of them that is not valid UTF-8 becomes one U+FFFD
// per byte, as in the reference.
class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (utf8::is_valid(pending)) {
        out.push_back(pending);
      } else {
        for (std::size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (auto& token : tokens) {
      if (const int byte = parse_byte_token(token); byte >= 0) {
        pending.push_back(static_cast<char>(byte));
        continue;
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static int parse_byte_token(const std::string& token) {
    if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
    auto hex = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int hi = hex(token[3]);
    const int lo = hex(token[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const auto& token : tokens) joined += token;
    tokens.assign(1, std::move(joined));
  }
};

// Removes up to `start` leading and `stop` trailing copies of one character from every token.
class StripDecoder final : public Decoder {
 public:
  StripDecoder(std::string content, std::size_t start, std::size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& token : tokens) {
      std::size_t begin = 0;
      for (std::size_t i = 0; i < start_ && token.compare(begin, content_.size(), content_) == 0;
           ++i)
        begin += content_.size();
      std::size_t end = token.size();
      for (std::size_t i = 0; i < stop_ && end >= begin + content_.size() &&
                              token.compare(end - content_.size(), content_.size(), content_) == 0;
           ++i)
        end -= content_.size();
      token = token.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  std::size_t start_;
  std::size_t stop_;
};

// The replacement character becomes a space, except in the first token when a prefix space
// was prepended at encoding time, where it is dropped.
class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool prepends)
      : replacement_(std::move(replacement)), prepends_(prepends) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      const std::string with = i == 0 && prepends_ ? "" : " ";
      std::string out;
      std::size_t copied = 0;
      for (auto hit = tokens[i].find(replacement_); hit != std::string::npos;
           hit = tokens[i].find(replacement_, copied)) {
        out.append(tokens[i], copied, hit - copied);
        out += with;
        copied = hit + replacement_.size();
      }
      out.append(tokens[i], copied);
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool prepends_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts)
      : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& part : parts_) part->decode_chain(tokens);
  }
  bool is_byte_level() const override {
    return parts_.size() == 1 && parts_.front()->is_byte_level();
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const nlohmann::json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  const std::string type = json_type(spec, where);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace") return std::make_unique<ReplaceDecoder>(spec, where);
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    const std::string content = json_string(spec, "content", where);
    std::size_t length = 0;
    if (content.empty() || (length = utf8::valid_sequence_length(content, 0)) != content.size())
      throw Error(where + ".content: expected exactly one character, got '" + content + "'");
    return std::make_unique<StripDecoder>(content, json_int(spec, "start", where, 0),
                                          json_int(spec, "stop", where, 0));
  }
  if (type == "Metaspace") {
    std::string scheme = spec.value("prepend_scheme", std::string("always"));
    if (!json_bool(spec, "add_prefix_space", where, true)) scheme = "never";
    return std::make_unique<MetaspaceDecoder>(json_string(spec, "replacement", where),
                                              scheme != "never");
  }
  if (type == "Sequence") {
    return std::make_unique<SequenceDecoder>(make_each(spec, "decoders", where, make_decoder));
  }
  throw Error(where + ": unsupported decoder type '" + type +
              "' (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence)");
}

}  // namespace kivi::text
