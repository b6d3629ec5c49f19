#include "kivi/text/added_vocabulary.h"

#include <algorithm>

#include <utf8proc.h>

#include "kivi/text/utf8.h"

namespace kivi::text {

namespace {

// Regex `\w` in Unicode mode: letters, marks, decimal digits, connector punctuation.
bool is_word_char(char32_t cp) {
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

}  // namespace

void AddedVocabulary::Trie::insert(std::string_view key, int token_index) {
  int node = 0;
  for (const char c : key) {
    const auto byte = static_cast<unsigned char>(c);
    auto& children = nodes[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(byte, 0),
                               [](const auto& a, const auto& b) { return a.first < b.first; });
    if (it != children.end() && it->first == byte) {
      node = it->second;
      continue;
    }
    const int child = static_cast<int>(nodes.size());
    children.insert(it, {byte, child});
    nodes.emplace_back();
    node = child;
  }
  nodes[node].token_index = token_index;
}

std::pair<std::size_t, int> AddedVocabulary::Trie::longest_at(std::string_view text,
                                                              std::size_t pos) const {
  std::pair<std::size_t, int> best{0, -1};
  int node = 0;
  for (std::size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    const auto& children = nodes[node].children;
    auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(byte, 0),
                               [](const auto& a, const auto& b) { return a.first < b.first; });
    if (it == children.end() || it->first != byte) break;
    node = it->second;
    if (nodes[node].token_index >= 0) best = {i + 1, nodes[node].token_index};
  }
  return best;
}

void AddedVocabulary::add(const AddedToken& token) {
  if (token.content.empty()) return;  // the reference ignores empty added tokens
  const auto it = index_by_id_.find(token.id);
  if (it != index_by_id_.end()) {
    id_by_content_.erase(tokens_[it->second].content);
    tokens_[it->second] = token;
  } else {
    index_by_id_.emplace(token.id, tokens_.size());
    tokens_.push_back(token);
  }
  id_by_content_[token.content] = token.id;
}

void AddedVocabulary::finish() {
  raw_trie_ = Trie{};
  normalized_trie_ = Trie{};
  for (std::size_t i = 0; i < tokens_.size(); ++i)
    (tokens_[i].normalized ? normalized_trie_ : raw_trie_)
        .insert(tokens_[i].content, static_cast<int>(i));
}

const AddedToken* AddedVocabulary::find(int32_t id) const {
  const auto it = index_by_id_.find(id);
  return it == index_by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedVocabulary::find(std::string_view content) const {
  const auto it = id_by_content_.find(std::string(content));
  if (it == id_by_content_.end()) return std::nullopt;
  return it->second;
}

std::vector<TextSegment> AddedVocabulary::split(std::string_view text, bool normalized) const {
  const Trie& trie = normalized ? normalized_trie_ : raw_trie_;
  std::vector<TextSegment> segments;
  if (trie.empty()) {
    if (!text.empty()) segments.push_back({0, text.size(), -1});
    return segments;
  }
  std::size_t covered = 0;  // text before this is already in `segments`
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto [match_end, index] = trie.longest_at(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[index];
    std::size_t start = pos;
    std::size_t stop = match_end;
    pos = match_end;  // matching resumes after this match even when it is discarded below
    if (token.single_word) {
      std::size_t before = start;
      std::size_t after = stop;
      const bool word_before = start > 0 && is_word_char(utf8::decode_backward(text, before));
      const bool word_after = stop < text.size() && is_word_char(utf8::decode(text, after));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) {
      std::size_t new_start = start;
      while (new_start > 0) {
        std::size_t previous = new_start;
        if (!utf8::is_white_space(utf8::decode_backward(text, previous))) break;
        new_start = previous;
      }
      start = std::max(new_start, covered);
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        std::size_t next = stop;
        if (!utf8::is_white_space(utf8::decode(text, next))) break;
        stop = next;
      }
    }
    if (covered < start) segments.push_back({covered, start, -1});
    segments.push_back({start, stop, token.id});
    covered = stop;
    pos = std::max(pos, stop);
  }
  if (covered < text.size()) segments.push_back({covered, text.size(), -1});
  return segments;
}

}  // namespace kivi::text
