// Added tokens (tokenizer.json "added_tokens"): matched in the text before the model sees it,
// leftmost-longest, with the per-token flags special/normalized/lstrip/rstrip/single_word.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kivi::text {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool normalized = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
};

// A stretch of text: an added token's match (token >= 0, stripped spaces included) or plain
// text for the model (token == -1).
struct TextSegment {
  std::size_t start;
  std::size_t end;
  int32_t token;
};

class AddedVocabulary {
 public:
  // Adds or replaces (same id) a token; the matchers are rebuilt lazily by finish().
  void add(const AddedToken& token);
  void finish();

  // Splits `text` at matches of the tokens whose `normalized` flag equals `normalized`
  // (non-normalized tokens are matched in the raw text, normalized ones after normalization).
  // Segments cover the text in order; plain segments are never empty.
  std::vector<TextSegment> split(std::string_view text, bool normalized) const;

  const AddedToken* find(int32_t id) const;
  std::optional<int32_t> find(std::string_view content) const;
  bool is_special(int32_t id) const {
    const AddedToken* t = find(id);
    return t != nullptr && t->special;
  }
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // A byte trie over token contents; children are sorted by byte.
  struct Node {
    std::vector<std::pair<unsigned char, int>> children;
    int token_index = -1;
  };
  struct Trie {
    std::vector<Node> nodes{Node{}};
    bool empty() const { return nodes.size() == 1; }
    void insert(std::string_view key, int token_index);
    // Longest key starting at text[pos]: {end, token_index} or {0, -1}.
    std::pair<std::size_t, int> longest_at(std::string_view text, std::size_t pos) const;
  };

  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, std::size_t> index_by_id_;
  std::unordered_map<std::string, int32_t> id_by_content_;
  Trie raw_trie_;
  Trie normalized_trie_;
};

}  // namespace kivi::text
