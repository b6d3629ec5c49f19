#include "kivi/text/bpe_model.h"

#include <cstdio>
#include <queue>

#include <nlohmann/json.hpp>

#include "kivi/text/json_fields.h"
#include "kivi/text/utf8.h"
#include "kivi/util/error.h"

namespace kivi::text {

BpeModel::BpeModel(const nlohmann::json& spec, const std::string& where) {
  if (spec.contains("dropout") && !spec["dropout"].is_null() &&
      spec["dropout"].get<double>() != 0.0)
    throw Error(where + ".dropout: BPE dropout is not supported (expected null)");
  fuse_unk_ = json_bool(spec, "fuse_unk", where, false);
  byte_fallback_ = json_bool(spec, "byte_fallback", where, false);
  ignore_merges_ = json_bool(spec, "ignore_merges", where, false);
  if (spec.contains("continuing_subword_prefix") && spec["continuing_subword_prefix"].is_string())
    continuing_subword_prefix_ = spec["continuing_subword_prefix"].get<std::string>();
  if (spec.contains("end_of_word_suffix") && spec["end_of_word_suffix"].is_string())
    end_of_word_suffix_ = spec["end_of_word_suffix"].get<std::string>();

  const auto vocab_it = spec.find("vocab");
  if (vocab_it == spec.end() || !vocab_it->is_object())
    throw Error(where + ".vocab: expected an object mapping token to id");
  vocab_.reserve(vocab_it->size());
  for (const auto& [token, id_value] : vocab_it->items()) {
    if (!id_value.is_number_integer() || id_value.get<long long>() < 0 ||
        id_value.get<long long>() > INT32_MAX)
      throw Error(where + ".vocab[\"" + token + "\"]: expected a non-negative id, got " +
                  id_value.dump());
    const auto id = id_value.get<int32_t>();
    if (id >= static_cast<int64_t>(vocab_it->size()) + kMaxTokenIdGap)
      throw Error(where + ".vocab[\"" + token + "\"]: id " + std::to_string(id) +
                  " is far past the " + std::to_string(vocab_it->size()) +
                  " entries (ids must be below entries + " + std::to_string(kMaxTokenIdGap) +
                  "; a real vocabulary numbers its tokens densely)");
    vocab_.emplace(token, id);
    if (static_cast<std::size_t>(id) >= id_to_token_.size()) id_to_token_.resize(id + 1);
    id_to_token_[id] = token;
  }
  if (spec.contains("unk_token") && spec["unk_token"].is_string()) {
    const auto unk = spec["unk_token"].get<std::string>();
    unk_id_ = token_to_id(unk);
    if (!unk_id_) throw Error(where + ".unk_token: '" + unk + "' is not in the vocabulary");
  }
  byte_token_ids_.fill(-1);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    if (const auto id = token_to_id(name)) byte_token_ids_[b] = *id;
  }
  load_merges(json_array(spec, "merges", where), where + ".merges");
  if (continuing_subword_prefix_.empty() && end_of_word_suffix_.empty()) {
    small_char_ids_.assign(0x800, -1);
    for (char32_t cp = 0; cp < 0x800; ++cp) {
      std::string character;
      utf8::append(character, cp);
      if (const auto id = token_to_id(character)) small_char_ids_[cp] = *id;
    }
  }
}

void BpeModel::load_merges(const nlohmann::json& merges, const std::string& where) {
  merges_.reserve(merges.size());
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& entry = merges[rank];
    std::string left;
    std::string right;
    if (entry.is_string()) {
      // The older layout: "left right" with exactly one space.
      const auto& text = entry.get_ref<const std::string&>();
      const auto space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos)
        throw Error(where + "[" + std::to_string(rank) + "]: expected 'left right', got '" + text +
                    "'");
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
               entry[1].is_string()) {
      left = entry[0].get<std::string>();
      right = entry[1].get<std::string>();
    } else {
      throw Error(where + "[" + std::to_string(rank) + "]: expected a string or a pair, got " +
                  entry.dump());
    }
    const auto left_id = token_to_id(left);
    const auto right_id = token_to_id(right);
    if (!left_id || !right_id)
      throw Error(where + "[" + std::to_string(rank) + "]: '" + (left_id ? right : left) +
                  "' is not in the vocabulary");
    std::string merged = left;
    const std::string_view prefix = continuing_subword_prefix_;
    merged += std::string_view(right).substr(
        !prefix.empty() && std::string_view(right).starts_with(prefix) ? prefix.size() : 0);
    const auto merged_id = token_to_id(merged);
    if (!merged_id)
      throw Error(where + "[" + std::to_string(rank) + "]: the merged token '" + merged +
                  "' is not in the vocabulary");
    // A repeated pair keeps its last rank, as in the reference's map construction.
    merges_.insert_or_assign(*left_id, *right_id, BpeMerge{static_cast<int32_t>(rank), *merged_id});
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

std::string_view BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= id_to_token_.size()) return {};
  return id_to_token_[id];
}

void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>& ids) const {
  std::string lookup;
  bool previous_unk = false;
  std::size_t pos = 0;
  while (pos < word.size()) {
    const std::size_t start = pos;
    std::size_t length = utf8::valid_sequence_length(word, pos);
    if (length == 0) length = 1;  // cannot happen for sanitized input; stay safe anyway
    pos += length;
    const std::string_view character = word.substr(start, length);
    std::optional<int32_t> id;
    if (!small_char_ids_.empty() && length <= 2) {
      std::size_t at = 0;
      const char32_t cp = utf8::decode(character, at);
      if (small_char_ids_[cp] >= 0) id = small_char_ids_[cp];
    } else if (continuing_subword_prefix_.empty() && end_of_word_suffix_.empty()) {
      id = token_to_id(character);
    } else {
      lookup.clear();
      if (start > 0) lookup += continuing_subword_prefix_;
      lookup += character;
      if (pos == word.size()) lookup += end_of_word_suffix_;
      id = token_to_id(lookup);
    }
    if (id) {
      ids.push_back(*id);
      previous_unk = false;
      continue;
    }
    if (byte_fallback_) {
      bool all_bytes = true;
      for (const char c : character)
        all_bytes &= byte_token_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all_bytes) {
        for (const char c : character)
          ids.push_back(byte_token_ids_[static_cast<unsigned char>(c)]);
        previous_unk = false;
        continue;
      }
    }
    if (unk_id_) {
      if (!(fuse_unk_ && previous_unk)) ids.push_back(*unk_id_);
      previous_unk = true;
    }
    // Without an unk token the reference drops the character; so do we.
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    if (const auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  std::vector<int32_t> ids;
  initial_symbols(word, ids);
  const int n = static_cast<int>(ids.size());
  if (n <= 1) {
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }
  // Symbols form a linked list; a min-heap of candidate merges ordered by (rank, position)
  // applies the best-ranked merge first, the leftmost among equals, as the reference does.
  std::vector<int> prev(n);
  std::vector<int> next(n);
  std::vector<bool> alive(n, true);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto push_candidate = [&](int left) {
    const int right = next[left];
    if (right < 0) return;
    if (const BpeMerge* merge = merges_.find(ids[left], ids[right]))
      queue.push({merge->rank, left, merge->new_id});
  };
  for (int i = 0; i + 1 < n; ++i) push_candidate(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    if (!alive[top.pos]) continue;
    const int right = next[top.pos];
    if (right < 0) continue;
    const BpeMerge* merge = merges_.find(ids[top.pos], ids[right]);
    if (merge == nullptr || merge->rank != top.rank || merge->new_id != top.new_id)
      continue;  // stale: one side was merged since this candidate was queued
    ids[top.pos] = top.new_id;
    alive[right] = false;
    next[top.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = top.pos;
    if (prev[top.pos] >= 0) push_candidate(prev[top.pos]);
    push_candidate(top.pos);
  }
  for (int i = 0; i >= 0; i = next[i]) out.push_back(ids[i]);
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() > kMaxCachedWordBytes) {
    merge_word(word, out);
    return;
  }
  {
    std::lock_guard lock(cache_mutex_);
    const auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const std::size_t mark = out.size();
  merge_word(word, out);
  std::lock_guard lock(cache_mutex_);
  if (cache_.size() >= kCacheCapacity) cache_.clear();
  cache_.emplace(std::string(word), std::vector<int32_t>(out.begin() + mark, out.end()));
}

}  // namespace kivi::text
