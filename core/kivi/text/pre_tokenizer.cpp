#include "kivi/text/pre_tokenizer.h"

#include <nlohmann/json.hpp>
#include <vector>

#include "kivi/text/byte_level.h"
#include "kivi/text/json_fields.h"
#include "kivi/text/regex.h"
#include "kivi/text/utf8.h"
#include "kivi/util/error.h"

namespace kivi::text {

namespace {

// GPT-2's split pattern, used by ByteLevel when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior parse_behavior(const std::string& name, const std::string& where) {
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (name == "Contiguous") return Behavior::kContiguous;
  throw Error(where + ".behavior: unsupported split behavior '" + name +
              "' (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)");
}

// Emits every match of `regex` in `text` and every non-empty gap between matches, in order.
void for_each_match_and_gap(const Regex& regex, std::string_view text, bool at_start,
                            const PieceSink& emit) {
  std::size_t previous = 0;
  regex.for_each_match(text, [&](std::size_t start, std::size_t end) {
    if (start > previous) emit(text.substr(previous, start - previous), at_start && previous == 0);
    if (end > start) emit(text.substr(start, end - start), at_start && start == 0);
    previous = end;
  });
  if (previous < text.size()) emit(text.substr(previous), at_start && previous == 0);
}

struct Segment {
  std::size_t start;
  std::size_t end;
  bool is_match;
};

// Applies a split behavior to the segments (matches and the gaps between them) that cover the
// text, following the reference's rules, and emits the non-empty, non-removed pieces.
void emit_segments(std::string_view text, bool at_start, std::vector<Segment> segments,
                   Behavior behavior, const PieceSink& sink) {
  std::vector<Segment> merged;
  merged.reserve(segments.size());
  switch (behavior) {
    case Behavior::kRemoved:
      for (const Segment& s : segments)
        if (!s.is_match) merged.push_back(s);
      break;
    case Behavior::kIsolated:
      merged = std::move(segments);
      break;
    case Behavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !merged.empty())
          merged.back().end = s.end;
        else
          merged.push_back(s);
        previous_match = s.is_match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !merged.empty())
          merged.back().start = it->start;
        else
          merged.push_back(*it);
        previous_match = it->is_match;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    }
    case Behavior::kContiguous: {
      bool previous_match = false;
      for (const Segment& s : segments) {
        if (s.is_match == previous_match && !merged.empty())
          merged.back().end = s.end;
        else
          merged.push_back(s);
        previous_match = s.is_match;
      }
      break;
    }
  }
  for (const Segment& s : merged)
    if (s.end > s.start) sink(text.substr(s.start, s.end - s.start), at_start && s.start == 0);
}

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> regex, Behavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}

  void split(std::string_view text, bool at_start, const PieceSink& sink) const override {
    if (behavior_ == Behavior::kIsolated) {
      // The common case (Llama-3, Qwen2): every match and every gap is a piece of its own,
      // whichever of them counts as the delimiter.
      for_each_match_and_gap(*regex_, text, at_start, sink);
      return;
    }
    std::vector<Segment> segments;
    std::size_t previous = 0;
    regex_->for_each_match(text, [&](std::size_t start, std::size_t end) {
      if (start > previous) segments.push_back({previous, start, invert_});
      segments.push_back({start, end, !invert_});
      previous = end;
    });
    if (previous < text.size()) segments.push_back({previous, text.size(), invert_});
    emit_segments(text, at_start, std::move(segments), behavior_, sink);
  }

 private:
  std::unique_ptr<Regex> regex_;
  Behavior behavior_;
  bool invert_;
};

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}

  void split(std::string_view text, bool at_start, const PieceSink& sink) const override {
    std::string prefixed;
    if (add_prefix_space_ && text.front() != ' ') {
      prefixed = " ";
      prefixed.append(text);
      text = prefixed;
    }
    std::string mapped;
    auto emit = [&](std::string_view piece, bool piece_at_start) {
      mapped.clear();
      byte_level::encode(piece, mapped);
      sink(mapped, piece_at_start);
    };
    if (!regex_) {
      emit(text, at_start);
      return;
    }
    for_each_match_and_gap(*regex_, text, at_start, emit);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  MetaspacePreTokenizer(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)), prepend_(prepend), split_(split) {}

  void split(std::string_view text, bool at_start, const PieceSink& sink) const override {
    std::string replaced;
    const bool starts_with_replacement =
        text.substr(0, replacement_.size()) == replacement_ || text.front() == ' ';
    if (!starts_with_replacement &&
        (prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && at_start)))
      replaced = replacement_;
    for (const char c : text) {
      if (c == ' ')
        replaced += replacement_;
      else
        replaced.push_back(c);
    }
    if (!split_) {
      sink(replaced, at_start);
      return;
    }
    // Split before every replacement character, which stays with the text that follows it.
    std::size_t piece_start = 0;
    std::size_t hit = replaced.find(replacement_, 1);
    std::string_view view = replaced;
    while (hit != std::string::npos) {
      sink(view.substr(piece_start, hit - piece_start), at_start && piece_start == 0);
      piece_start = hit;
      hit = replaced.find(replacement_, hit + replacement_.size());
    }
    if (piece_start < view.size()) sink(view.substr(piece_start), at_start && piece_start == 0);
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}

  void split(std::string_view text, bool at_start, const PieceSink& sink) const override {
    run(0, text, at_start, sink);
  }

 private:
  void run(std::size_t index, std::string_view text, bool at_start, const PieceSink& sink) const {
    if (index == parts_.size()) {
      sink(text, at_start);
      return;
    }
    parts_[index]->split(text, at_start, [&](std::string_view piece, bool piece_at_start) {
      run(index + 1, piece, piece_at_start, sink);
    });
  }

  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

std::unique_ptr<Regex> split_pattern(const nlohmann::json& spec, const std::string& where) {
  const auto it = spec.find("pattern");
  if (it != spec.end() && it->is_object()) {
    if (it->contains("Regex") && (*it)["Regex"].is_string())
      return std::make_unique<Regex>((*it)["Regex"].get<std::string>(), where + ".pattern.Regex");
    if (it->contains("String") && (*it)["String"].is_string()) {
      // A literal: quote it so that PCRE2 matches it verbatim.
      return std::make_unique<Regex>("\\Q" + (*it)["String"].get<std::string>() + "\\E",
                                     where + ".pattern.String");
    }
  }
  throw Error(where + ".pattern: expected {\"Regex\": ...} or {\"String\": ...}");
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& spec,
                                                 const std::string& where) {
  if (spec.is_null()) return nullptr;
  const std::string type = json_type(spec, where);
  if (type == "Split") {
    return std::make_unique<SplitPreTokenizer>(
        split_pattern(spec, where), parse_behavior(json_string(spec, "behavior", where), where),
        json_bool(spec, "invert", where, false));
  }
  if (type == "ByteLevel") {
    std::unique_ptr<Regex> regex;
    if (json_bool(spec, "use_regex", where, true))
      regex = std::make_unique<Regex>(kGpt2Pattern, where + " (GPT-2 pattern)");
    return std::make_unique<ByteLevelPreTokenizer>(json_bool(spec, "add_prefix_space", where, true),
                                                   std::move(regex));
  }
  if (type == "Metaspace") {
    const std::string replacement = json_string(spec, "replacement", where);
    auto prepend = MetaspacePreTokenizer::Prepend::kAlways;
    if (spec.contains("prepend_scheme") && spec["prepend_scheme"].is_string()) {
      const auto scheme = spec["prepend_scheme"].get<std::string>();
      if (scheme == "first") {
        prepend = MetaspacePreTokenizer::Prepend::kFirst;
      } else if (scheme == "never") {
        prepend = MetaspacePreTokenizer::Prepend::kNever;
      } else if (scheme != "always") {
        throw Error(where + ".prepend_scheme: unsupported value '" + scheme +
                    "' (expected always, first or never)");
      }
    }
    if (!json_bool(spec, "add_prefix_space", where, true))
      prepend = MetaspacePreTokenizer::Prepend::kNever;
    return std::make_unique<MetaspacePreTokenizer>(replacement, prepend,
                                                   json_bool(spec, "split", where, true));
  }
  if (type == "Sequence") {
    return std::make_unique<SequencePreTokenizer>(
        make_each(spec, "pretokenizers", where, make_pre_tokenizer));
  }
  throw Error(where + ": unsupported pre_tokenizer type '" + type +
              "' (supported: Split, ByteLevel, Metaspace, Sequence)");
}

}  // namespace kivi::text
