// The BPE model of tokenizer.json ("model": {"type": "BPE"}): a vocabulary and ranked merges,
// with the options the Llama and Qwen files use (byte_fallback, unk_token/fuse_unk,
// ignore_merges, continuing_subword_prefix, end_of_word_suffix).
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "kivi/text/merge_table.h"

namespace kivi::text {

// Token ids are numbered densely in real files; an id further than this past the number of
// vocabulary entries is refused (tables indexed by id would otherwise take gigabytes).
inline constexpr int64_t kMaxTokenIdGap = 65536;

class BpeModel {
 public:
  // `where` names the file and field for error messages.
  BpeModel(const nlohmann::json& spec, const std::string& where);

  // Appends the ids of one pre-tokenized word to `out`.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // Empty view for an id outside the vocabulary.
  std::string_view id_to_token(int32_t id) const;
  // One past the largest id in the vocabulary.
  std::size_t vocab_size() const { return id_to_token_.size(); }

 private:
  void load_merges(const nlohmann::json& merges, const std::string& where);
  // The ids of the word's characters before merging (byte fallback and unk applied).
  void initial_symbols(std::string_view word, std::vector<int32_t>& ids) const;
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> vocab_;
  std::vector<std::string> id_to_token_;
  MergeTable merges_;
  // Ids of the code points below U+0800 when a lone character is a vocabulary entry (-1 if not):
  // the initial symbols of byte-level and most SentencePiece words, without hashing.
  std::vector<int32_t> small_char_ids_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  std::array<int32_t, 256> byte_token_ids_{};  // id of "<0xXX>" or -1

  // Words seen before; bounded so that adversarial input cannot grow it without limit.
  static constexpr std::size_t kCacheCapacity = 1 << 16;
  static constexpr std::size_t kMaxCachedWordBytes = 256;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace kivi::text
